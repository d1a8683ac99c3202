"""Feature-aware families over field slots: LR, FM, NFM, Wide & Deep, DeepFM and deck 002's neural MF with side features."""
