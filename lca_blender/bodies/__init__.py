"""Body models turned into a `Rig`: Anny (the default, offline) and SMPL-X (a user-supplied file)."""
