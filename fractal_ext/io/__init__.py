"""What fractal_ext reads and writes: checkpoints (`checkpoints`), training and evaluation data
(`datasets`), sampled images (`images`), and the atomic write every file goes through (`atomic`)."""
