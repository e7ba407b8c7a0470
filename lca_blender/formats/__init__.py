"""File formats: the .lca avatar container, 3DGS .ply splats, and the safe-writing helper they share."""
