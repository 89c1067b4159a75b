"""avb_minimal: Adversarial Variational Bayes (Mescheder, Nowozin & Geiger, ICML 2017,
arXiv:1701.04722) in NumPy + autograd, written to be read.

Layers, top to bottom: each module imports only modules listed below it (tests/test_layout.py
checks this).  The teaching core is the flat list of modules in this folder; the paper's
experiments, the speed work and the course tooling have rooms of their own.

  __main__, chapter, argcheck   the command line; helpers for the chapters' command lines
  course/    tasks, answers, build, grade, plugin: the assignments (task list, the answers'
             code forms, student tree, grader)
  fast/      selfcheck, bench_step, bench_ais, bench_ops: the device check; what a step,
             an AIS estimate and the hot ops cost
  experiments/   table1, eight_schools, mnist_study, mnist, plots: the paper's experiments and figures
                 (mnist_study: the screening study behind Table 2)
  bavae      the Biadversarial VAE (Fickinger): two adversaries, eq. (6), (14), (19)
  vi         black-box VI for an unnormalised density: AVB (sec. 5.1) and Gaussian VB
  mcmc       Hamiltonian Monte Carlo and its diagnostics (R-hat, ESS): the ground truth
  ais        annealed importance sampling: log p(x) on binarized MNIST (Table 2)
  train      the one training loop (Algorithm 1, 2), checkpoints, resume
  fast/graph the fast step captured once as a CUDA graph, replayed per iteration (train's
             step on the GPU); fast/device_ops its kernels (tiled GEMM with fused epilogues,
             Philox noise, fused Adam)
  fast/step  the hand-written AVB step (same numbers as the autograd one), used by train
  evaluate   exact log-likelihood by integration, ELBOs, k-NN KL estimates
  related    the related work of sec. 6 as losses (AAE, f-GAN, ...)
  objectives every loss as a pure function: eq. (2.4), (3.3), (3.7), (4.2), the adversary family
  models     encoders (Gaussian, implicit, noise-basis), decoder, adversaries
  targets    unnormalised 2-d densities and Eight Schools; checks of a log-density
  data, checkpoint, optim   datasets; atomic checkpoints and JSON; Adam on pytrees
  nn         MLPs as lists of (W, b), ELU, a residual net
  distributions   log-densities (Gaussian, KL of diagonal Gaussians)
  ops        the two hot ops as autograd primitives with hand-written VJPs
  trees      pytrees: flatten, map, paths, finiteness
  progress   one progress line for long loops
  fast/emulate   kernels/*.cu compiled with g++ for the CPU (cuda_emulation.h), launched like cupy
  backend    numpy or cupy (the only module that imports cupy); kernels/*.cu
"""
__version__ = "0.1.0"
