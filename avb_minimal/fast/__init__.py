"""The speed work: the hand-written training step (`step`, which `train` uses where it
applies) and the benchmarks of the step and of the two hot ops (`bench_step`, `bench_ops`)."""
