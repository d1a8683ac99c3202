"""Collaborative filtering from the interaction matrix: baselines, factor models, autoencoders, RBMs and NCF."""
