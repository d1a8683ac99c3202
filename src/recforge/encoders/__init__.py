"""Encoders: behaviour (prod2vec, meta-prod2vec, user2vec) and content models -> item vector tables."""
