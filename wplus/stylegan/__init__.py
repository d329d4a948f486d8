"""StyleGAN2 and e4e: the generator, the e4e encoder and its files, W+ edit directions."""
