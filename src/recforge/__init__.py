"""recforge: deep-learning recommender systems as Kedro pipelines."""

__version__ = "0.1.0"
