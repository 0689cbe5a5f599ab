"""Networks: the frozen diffusion prior, the mapper, the digit classifier."""
