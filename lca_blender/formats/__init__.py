"""File formats: the .lca avatar container, 3DGS .ply and glTF splats, poses, animations, face captures."""
