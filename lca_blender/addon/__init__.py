"""bpy-free helpers only the Blender add-on uses: its data as flat arrays, viewport maths, the engine
subprocess. Blender loads them (numpy and the standard library only); tests run them without Blender.
"""
