"""Networks, created by name; a model never reads data or knows its loss."""
from .rfm_nets import DepthEstimator, FeatureExtractor, MetaLearner, rfm_networks

MODELS = {"rfm_feature_extractor": FeatureExtractor, "rfm_depth_estimator": DepthEstimator,
          "rfm_meta_learner": MetaLearner}


def create_model(name: str, **kwargs):
    """A model from the registry by name."""
    try:
        return MODELS[name](**kwargs)
    except KeyError:
        raise ValueError(f"unknown model {name!r}; known: {sorted(MODELS)}") from None


__all__ = ["MODELS", "create_model", "rfm_networks", "FeatureExtractor", "DepthEstimator", "MetaLearner"]
