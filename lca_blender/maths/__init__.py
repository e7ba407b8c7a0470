"""The maths Blender runs, in numpy: rotations, colour, SH, cameras, projection, posing, lights and
shading. Each `*_torch.py` is the differentiable twin of the module beside it (engine only).
"""
