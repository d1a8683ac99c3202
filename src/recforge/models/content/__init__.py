"""Content and hybrid families: item images, text and audio, and their combinations with collaborative filtering."""
