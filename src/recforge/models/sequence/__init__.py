"""Session and sequence families: neighbourhoods, Markov chains, RNNs, convolutions and attention over ordered histories."""
