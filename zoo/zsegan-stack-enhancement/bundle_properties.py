"""What an app that enhances z-stacks with this bundle relies on: the ``zsegan-stack-enhancement`` app of the
bundle's ``supported_apps`` (configs/metadata.json).

Such an app (a napari widget, a script, a service) runs the bundle's inference config on a user's stacks: it sets
where they are and where the results go, may choose other weights or a registered model and the sliding window,
and reads the metadata to know what G_S takes. The model zoo's CI (``ci/verify_bundle.py``) looks for this file in
the folder named after the app, builds the inference workflow and checks it against ``MetaProperties`` and
``InferProperties``: MONAI's own, plus the ids below.
"""

from monai.bundle.properties import InferProperties as MonaiInferProperties
from monai.bundle.properties import MetaProperties as MonaiMetaProperties
from monai.utils import BundleProperty, BundlePropertyConfig


def required(config_id: str, description: str) -> dict:
    """A required property: ``config_id`` must be in the config (metadata ids start with ``_meta_#``)."""
    return {BundleProperty.DESC: description, BundleProperty.REQUIRED: True, BundlePropertyConfig.ID: config_id}


MetaProperties = {
    **MonaiMetaProperties,
    "value_range": required("_meta_#network_data_format#inputs#image#value_range", "G_S's input range"),
    "num_channels": required("_meta_#network_data_format#inputs#image#num_channels", "G_S's input channels"),
}

InferProperties = {
    **MonaiInferProperties,
    "input_path": required("input_path", "the stack file or folder of stacks to enhance"),
    "output_dir": required("output_dir", "where the enhanced stacks are written, <name>_enhanced.<suffix>"),
    "model_path": required("model_path", "the G_S weights (default: the bundle's models/model.pt)"),
    "model_uri": required("model_uri", "or a registered G_S instead: models:/<name>@<alias> (null: model_path)"),
    "sw_roi_size": required("sw_roi_size", "the sliding window: [-1, Y, X] keeps the full depth"),
    "sw_overlap": required("sw_overlap", "the windows' overlap, 0 to 1"),
    "intensity_lower": required("intensity_lower", "the percentile mapped to -1 before G_S (as in training)"),
    "intensity_upper": required("intensity_upper", "the percentile mapped to 1 before G_S (as in training)"),
}
