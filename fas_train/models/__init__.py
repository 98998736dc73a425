"""Networks, created by name; a model never reads data or knows its loss."""
from .ccdd_nets import ClassConditionalDiscriminator, Encoder, VideoHead
from .d2am_nets import DRLM, D2AMFeatureExtractor
from .metapattern_nets import HFM, HFN, PatternExtractor
from .rfm_nets import DepthEstimator, FeatureExtractor, MetaLearner, rfm_networks

MODELS = {"rfm_feature_extractor": FeatureExtractor, "rfm_depth_estimator": DepthEstimator,
          "rfm_meta_learner": MetaLearner, "d2am_feature_extractor": D2AMFeatureExtractor, "drlm": DRLM,
          "ccdd_encoder": Encoder, "ccdd_discriminator": ClassConditionalDiscriminator, "ccdd_video_head": VideoHead,
          "metapattern_extractor": PatternExtractor, "hfm": HFM, "hfn": HFN}


def create_model(name: str, **kwargs):
    """A model from the registry by name."""
    try:
        return MODELS[name](**kwargs)
    except KeyError:
        raise ValueError(f"unknown model {name!r}; known: {sorted(MODELS)}") from None


__all__ = ["MODELS", "create_model", "rfm_networks"] + sorted(cls.__name__ for cls in MODELS.values())
