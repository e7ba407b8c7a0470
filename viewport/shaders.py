"""The splat shader: 3DGS projection per quad corner, Gaussian falloff per pixel, relighting in GLSL.

Vertex stage (one Gaussian = 4 vertices, 2 triangles): the EWA projection of
`lca_blender/splat_sort.py` (its numpy twin) in OpenGL pixels, a screen quad of 3 sigma (opacity
aware), the Gaussian centre's depth for every corner (so the scene's depth buffer occludes whole
splats, as meshes in front of a Gaussian's centre hide it in the engine too), and the colour:
"as captured" comes per vertex from the CPU (spherical harmonics evaluated in numpy for the current
view, decoded from sRGB), "relit" is computed here with the formulas of `lca_blender/shading.py`.
Fragment stage: alpha = min(0.99, o exp(-d^2 / 2)), discarded below 1/255, premultiplied output.

The output is scene-linear, premultiplied: the 3D viewport draws POST_VIEW handlers into its sRGB
overlay framebuffer (GPU_SRGB8_A8 since Blender 2.91; its built-in shaders convert their sRGB
inputs to linear for it), which encodes linear values to the display on write; the offscreen
draws use a float framebuffer and the caller chooses the view transform.
"""

from __future__ import annotations

import gpu

from ..lca_blender.addon.viewport_maths import LIGHT_ROWS, MAX_SHADER_LIGHTS
from ..lca_blender.maths.projection import FOV_CLAMP, LOW_PASS, MIN_ALPHA

_TYPEDEF = f"""
struct SplatFrame {{
  mat4 view;
  mat4 projection;
  vec4 viewport;  /* x, y, width, height of the drawn region in framebuffer pixels */
  vec4 eye;  /* w = 1: the eye's position; w = 0: the direction towards an orthographic eye */
  vec4 ambient_sh[9];
  vec4 light_header;  /* x: light count */
  vec4 lights[{LIGHT_ROWS * MAX_SHADER_LIGHTS}];
}};
"""

_VERTEX = f"""
const float PI = 3.14159265358979;
const float TINY = 1e-12;

float smoothstep01(float t) {{
  t = clamp(t, 0.0, 1.0);
  return t * t * (3.0 - 2.0 * t);
}}

vec3 ambient_irradiance(vec3 n) {{
  float x = n.x, y = n.y, z = n.z;
  vec3 e = PI * 0.28209479177387814 * frame.ambient_sh[0].rgb;
  e += (2.0 * PI / 3.0) * 0.4886025119029199 *
       (y * frame.ambient_sh[1].rgb + z * frame.ambient_sh[2].rgb + x * frame.ambient_sh[3].rgb);
  e += (PI / 4.0) * (1.0925484305920792 * (x * y * frame.ambient_sh[4].rgb + y * z * frame.ambient_sh[5].rgb +
                                          x * z * frame.ambient_sh[7].rgb) +
                     0.31539156525252005 * (3.0 * z * z - 1.0) * frame.ambient_sh[6].rgb +
                     0.5462742152960396 * (x * x - y * y) * frame.ambient_sh[8].rgb);
  return max(e, vec3(0.0));
}}

float specular_brdf(vec3 n, vec3 l, vec3 v, float roughness, float f0) {{
  float n_dot_l = dot(n, l), n_dot_v = dot(n, v);
  if (n_dot_l <= 0.0 || n_dot_v <= 0.0) {{
    return 0.0;
  }}
  float alpha = max(roughness * roughness, 1e-3);
  float alpha2 = alpha * alpha;
  vec3 h = l + v;
  h = h / max(length(h), TINY);
  float n_dot_h = dot(n, h);
  float v_dot_h = clamp(dot(v, h), 0.0, 1.0);
  vec3 across = cross(n, h);
  float shape = dot(across, across) + n_dot_h * n_dot_h * alpha2;
  float distribution = alpha2 / (PI * shape * shape);
  float fresnel = f0 + (min(50.0 * f0, 1.0) - f0) * pow(1.0 - v_dot_h, 5.0);
  float visibility = 0.5 / max(n_dot_l * sqrt(n_dot_v * n_dot_v * (1.0 - alpha2) + alpha2) +
                               n_dot_v * sqrt(n_dot_l * n_dot_l * (1.0 - alpha2) + alpha2), TINY);
  return distribution * fresnel * visibility;
}}

vec3 relit_color(vec3 x, vec3 n, vec3 v, vec3 albedo, float roughness, float specular) {{
  vec3 irradiance = ambient_irradiance(n);
  vec3 reflected = vec3(0.0);
  int count = int(frame.light_header.x);
  for (int k = 0; k < count; k++) {{
    vec4 place = frame.lights[{LIGHT_ROWS} * k];
    vec4 aim = frame.lights[{LIGHT_ROWS} * k + 1];
    vec4 power = frame.lights[{LIGHT_ROWS} * k + 2];
    vec4 extra = frame.lights[{LIGHT_ROWS} * k + 3];
    int kind = int(place.w + 0.5);
    vec3 l;
    float falloff = 1.0;
    if (kind == 0) {{
      l = -aim.xyz;
    }}
    else {{
      vec3 offset = place.xyz - x;
      float distance2 = dot(offset, offset);
      l = offset / sqrt(max(distance2, TINY));
      if (kind == 1) {{
        falloff = 1.0 / max(distance2, max(aim.w, TINY));
      }}
      else if (kind == 2) {{
        float edge = max((1.0 - power.w) * extra.x, TINY);
        falloff = smoothstep01((-dot(l, aim.xyz) - power.w) / edge) / max(distance2, max(aim.w, TINY));
      }}
      else {{
        falloff = max(-dot(l, aim.xyz), 0.0) / (distance2 + extra.y / PI);
      }}
    }}
    vec3 light_irradiance = power.rgb * (max(dot(n, l), 0.0) * falloff);
    irradiance += light_irradiance;
    reflected += specular_brdf(n, l, v, roughness, 0.08 * specular) * light_irradiance;
  }}
  return albedo * irradiance / PI + reflected;
}}

void main() {{
  float opacity = material.x * object_params.y;
  vec4 camera = frame.view * vec4(center, 1.0);
  mat3 rotation = mat3(frame.view);
  mat3 sigma = mat3(cov_a.x, cov_a.y, cov_a.z, cov_a.y, cov_b.x, cov_b.y, cov_a.z, cov_b.y, cov_b.z);
  mat3 camera_sigma = rotation * (sigma * object_params.x) * transpose(rotation);

  mat4 p = frame.projection;
  vec2 size = frame.viewport.zw;
  vec2 focal = vec2(p[0][0], p[1][1]) * size * 0.5;
  bool perspective = p[3][3] == 0.0;
  float depth = -camera.z;
  vec2 pixel;
  mat3x2 jacobian;
  if (perspective) {{
    vec2 principal = (vec2(1.0) - vec2(p[2][0], p[2][1])) * size * 0.5;
    vec2 tangent = camera.xy / depth;
    vec2 margin = ({FOV_CLAMP} - 1.0) * 0.5 * size / focal;
    vec2 clamped = clamp(tangent, -(principal / focal + margin), (size - principal) / focal + margin);
    pixel = focal * tangent + principal;
    jacobian = mat3x2(focal.x / depth, 0.0, 0.0, focal.y / depth, focal * clamped / depth);
  }}
  else {{
    pixel = (vec2(p[0][0] * camera.x + p[3][0], p[1][1] * camera.y + p[3][1]) + 1.0) * size * 0.5;
    jacobian = mat3x2(focal.x, 0.0, 0.0, focal.y, 0.0, 0.0);
  }}
  mat2 unfiltered = jacobian * camera_sigma * transpose(jacobian);
  mat2 sigma2d = unfiltered + mat2({LOW_PASS});
  float determinant = sigma2d[0][0] * sigma2d[1][1] - sigma2d[0][1] * sigma2d[1][0];
  if (opacity < {MIN_ALPHA} || determinant <= 0.0 || (perspective && depth <= 0.0)) {{
    gl_Position = vec4(0.0, 0.0, 2.0, 1.0);  /* beyond the far plane: clipped */
    return;
  }}
  conic_opacity = vec4(sigma2d[1][1], -sigma2d[0][1], sigma2d[0][0], 0.0) / determinant;
  if (object_params.w > 0.5) {{
    /* antialiased splats: the share of the widened peak the splat's own footprint explains */
    float own = unfiltered[0][0] * unfiltered[1][1] - unfiltered[0][1] * unfiltered[1][0];
    opacity *= sqrt(clamp(own / determinant, 1e-12, 1.0));
  }}
  conic_opacity.w = opacity;
  float extent = sqrt(2.0 * log(clamp(opacity, {MIN_ALPHA}, 1.0) / {MIN_ALPHA}));
  vec2 corner_pixel = pixel + corner * extent * sqrt(vec2(sigma2d[0][0], sigma2d[1][1]));
  center_pixel = pixel + frame.viewport.xy;

  vec4 clip = p * camera;
  gl_Position = vec4((corner_pixel / size * 2.0 - 1.0) * clip.w, clip.z, clip.w);

  if (object_params.z > 0.5) {{
    vec3 towards_eye = frame.eye.w > 0.5 ? normalize(frame.eye.xyz - center) : frame.eye.xyz;
    splat_color = relit_color(center, normalize(normal), towards_eye, color, material.y, material.z);
  }}
  else {{
    splat_color = color;
  }}
}}
"""

_FRAGMENT = f"""
void main() {{
  vec2 d = gl_FragCoord.xy - center_pixel;
  float power = -0.5 * (conic_opacity.x * d.x * d.x + conic_opacity.z * d.y * d.y) -
                conic_opacity.y * d.x * d.y;
  float alpha = min(0.99, conic_opacity.w * exp(power));
  if (power > 0.0 || alpha < {MIN_ALPHA}) {{
    discard;
  }}
  frag_color = vec4(splat_color * alpha, alpha);
}}
"""

# Vertex buffer layouts: geometry changes with the pose, colour with the view (captured) or the pose.
GEOMETRY_ATTRIBUTES = (
    ("corner", 2),  # the quad corner, (+-1, +-1)
    ("center", 3),  # world mean
    ("cov_a", 3),  # world covariance xx, xy, xz
    ("cov_b", 3),  # world covariance yy, yz, zz
    ("normal", 3),  # the thin axis turned out of the skin (relit look)
    ("material", 3),  # opacity, roughness, specular
)
COLOR_ATTRIBUTES = (("color", 3),)  # linear: captured colour, or the albedo in the relit look

_shader: gpu.types.GPUShader | None = None


def vertex_format(attributes: tuple[tuple[str, int], ...]) -> gpu.types.GPUVertFormat:
    layout = gpu.types.GPUVertFormat()
    for name, length in attributes:
        layout.attr_add(id=name, comp_type="F32", len=length, fetch_mode="FLOAT")
    return layout


def splat_shader() -> gpu.types.GPUShader:
    """The splat shader, compiled once per session (needs a GPU context: a window or one render).

    Push constant `object_params`: (splat scale squared, opacity multiplier, 1 for relit else 0,
    1 for antialiased splats else 0);
    uniform buffer `frame`: a `SplatFrame` (see `frame_uniforms` in `viewport/draw.py`).
    """
    global _shader
    if _shader is None:
        info = gpu.types.GPUShaderCreateInfo()
        for slot, (name, length) in enumerate(GEOMETRY_ATTRIBUTES + COLOR_ATTRIBUTES):
            info.vertex_in(slot, f"VEC{length}", name)
        interface = gpu.types.GPUStageInterfaceInfo("lca_splat_interface")
        interface.flat("VEC4", "conic_opacity")
        interface.flat("VEC2", "center_pixel")
        interface.flat("VEC3", "splat_color")
        info.vertex_out(interface)
        info.typedef_source(_TYPEDEF)
        info.uniform_buf(0, "SplatFrame", "frame")
        info.push_constant("VEC4", "object_params")
        info.fragment_out(0, "VEC4", "frag_color")
        info.vertex_source(_VERTEX)
        info.fragment_source(_FRAGMENT)
        _shader = gpu.shader.create_from_info(info)
    return _shader
