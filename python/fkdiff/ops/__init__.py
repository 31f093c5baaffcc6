"""fkdiff.ops: the kernel front door (being written)."""
