"""avb_minimal: Adversarial Variational Bayes (Mescheder, Nowozin & Geiger, ICML 2017)
in NumPy + autograd, written to be read.

Layers (each uses only the ones below it):
  experiments  the paper's experiments as functions returning numbers
  train, evaluate   Algorithm 1/2 loops; exact log-likelihood, ELBO and k-NN estimators
  objectives   every loss as a pure function: eq. 2.4, 3.3, 3.7, 4.2
  models       Gaussian / implicit / noise-basis encoders, decoder, adversaries
  nn, optim, distributions, data   MLPs, Adam, log-densities, datasets
  ops          the two hot ops as autograd primitives (inner-product adversary, Bernoulli)
  backend      numpy or cupy (the only module that imports cupy)
"""
__version__ = "0.1.0"
