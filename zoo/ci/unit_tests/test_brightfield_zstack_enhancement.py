"""Model-zoo unit tests of the brightfield_zstack_enhancement bundle (ZSE-GAN), in the zoo's form: its CI runs them
from the root of its repository (``python ci/unit_tests/runner.py --b brightfield_zstack_enhancement``).

On a tiny set of simulated z-stacks (the bundle's own simulator): a short training of tiny networks, and inference
with the shipped weights (``models/model.pt``, fetched from ``large_files.yml`` by the CI first); each workflow
is checked against MONAI's workflow properties before it runs.
"""

import os
import shutil
import sys
import tempfile
import unittest

from monai.bundle import ConfigWorkflow

BUNDLE_ROOT = "models/brightfield_zstack_enhancement"
TINY_TRAIN = {
    "g_channels": 4, "g_residual_blocks": 1, "d_channels": 8, "crop_size": 32, "sw_roi_size": [-1, 32, 32],
    "sw_overlap_px": 16, "n_horizontal": 2, "n_vertical": 2, "max_epochs": 1, "epoch_length": 2,
}  # fmt: skip


def bundle_workflow(config: str, workflow_type: str, **override) -> ConfigWorkflow:
    """The bundle's workflow ``configs/<config>``, as the zoo's tests build one."""
    configs = os.path.join(BUNDLE_ROOT, "configs")
    return ConfigWorkflow(
        config_file=os.path.join(configs, config),
        logging_file=os.path.join(configs, "logging.conf"),
        meta_file=os.path.join(configs, "metadata.json"),
        workflow_type=workflow_type,
        bundle_root=BUNDLE_ROOT,
        **override,
    )


class TestBrightfieldZStackEnhancement(unittest.TestCase):
    def setUp(self):
        if BUNDLE_ROOT not in sys.path:
            sys.path.insert(0, BUNDLE_ROOT)  # the bundle's `scripts` package
        from scripts.simulate.zstacks import simulate_dataset

        self.tmp = tempfile.mkdtemp()
        self.dataset_dir = os.path.join(self.tmp, "data")
        simulate_dataset(self.dataset_dir, n_stacks=4, n_infocus=4, size=40, depth=17, seed=3, progress=False)

    def tearDown(self):
        shutil.rmtree(self.tmp)

    def run_checked(self, workflow: ConfigWorkflow):
        workflow.initialize()
        self.assertEqual(workflow.check_properties(), [])
        workflow.run()
        workflow.finalize()

    def test_train(self):
        output_dir = os.path.join(self.tmp, "train")
        model_path = os.path.join(output_dir, "model.pt")
        override = {"dataset_dir": self.dataset_dir, "output_dir": output_dir, "model_path": model_path, **TINY_TRAIN}
        self.run_checked(bundle_workflow("train.json", "train", **override))
        self.assertTrue(os.path.isfile(model_path))

    def test_infer(self):
        output_dir = os.path.join(self.tmp, "enhanced")
        stacks = os.path.join(self.dataset_dir, "stacks")
        override = {"dataset_dir": self.dataset_dir, "input_path": stacks, "output_dir": output_dir}
        self.run_checked(bundle_workflow("inference.json", "infer", **override))
        expected = sorted(name.replace(".tif", "_enhanced.tif") for name in os.listdir(stacks))
        self.assertEqual(sorted(os.listdir(output_dir)), expected)


if __name__ == "__main__":
    unittest.main()
