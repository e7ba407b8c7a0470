"""fit_body: the person's body shape, pose (fingers and jaw included) and every photo's camera.

The body model is fitted directly in torch (Anny's shape is differentiable in its six phenotype
values, SMPL-X's in its betas; the pose is a rotation vector per bone), to the 2D landmarks
MediaPipe found and to the person masks (`targets`):

- landmarks: the body's 3D points (bone heads, fingertips, a few surface points such as the nose
  and heels) projected by each photo's camera, against the landmark each photo has, weighted by
  MediaPipe's visibility and with a robust loss; hands and face count only where found;
- silhouettes: every body vertex must project inside the mask (a distance transform sampled at
  the projected vertices), and every point of the mask's outline must have a vertex near it;
- priors: the pose stays near the rest pose (Anny's relaxed A-pose), the shape near the average
  (Anny's phenotype, SMPL-X's betas), and bones no photo can show (toes, metacarpals, eyes) do
  not move. Anny's bones turn only about the axes a person's joints do (`anny.JOINT_AXES`: knees
  and finger joints are hinges, the second segment of each leg bone follows the first, the
  forearm twists along its length): what the photos cannot tell apart is not left to noise.

Cameras (`optimise`): the body defines the world (its root does not move); each photo gets its
own camera, as if the camera went round the person or the person turned in front of it. A camera
starts from the best of several directions round the body, tried in one batch; a photo with a
face is taken from the front half, one without a face and with a hidden nose from the back half.
When structure-from-motion tied the photos together, its cameras (aligned to these by a
similarity) replace the independent guesses and give the focal length. `BodyFitSettings` holds
the fit's weights, learning rates and step counts.

A sitter moves between shots; asked to (`BodyFitSettings.photo_heads`, `photo_arms`, or
`build_avatar(photo_poses=True)`; off, as it scored lower on the harness), after the shared fit
each photo gets its own pose where its landmarks show it (`View.pose`): a turn of head and neck
from the 468 face landmarks (`photo_heads`), and of each arm about its shoulder from elbow, wrist
and knuckles (`photo_arms`); each joint's turns average to zero over the photos (the shared pose
is their compromise).

The body model is either Anny (`anny`, the default: its phenotype is the shape, jawOpen opens the
mouth) or SMPL-X from the user's own model file (`smplx`: betas are the shape, the jaw is a
joint). Both stand behind `FittableBody` (`body`), so the landmarks, silhouettes, cameras and
priors above are one code path. The result is converted to the body's rig for the fitted shape
(the cached Anny rig for the phenotype, or `smplx_rig` for the betas) and a `Pose` on it.
"""

from .body import BODY_MODELS, BodyChoice, FittableBody, FittedRig, PosedBody, body_choice
from .optimise import BodyFitSettings, fit_body
from .targets import BODY_JOINTS, BODY_SURFACE, BODY_SURFACE_INDICES, FACE_LANDMARKS

__all__ = [
    "BODY_JOINTS",
    "BODY_MODELS",
    "BODY_SURFACE",
    "BODY_SURFACE_INDICES",
    "FACE_LANDMARKS",
    "BodyChoice",
    "BodyFitSettings",
    "FittableBody",
    "FittedRig",
    "PosedBody",
    "body_choice",
    "fit_body",
]
