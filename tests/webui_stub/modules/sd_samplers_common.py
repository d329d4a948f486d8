class InterruptedException(BaseException):
    """Raised by the denoiser when the user interrupts; the sampler returns its last latent."""
