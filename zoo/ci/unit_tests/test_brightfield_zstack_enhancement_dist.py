"""Model-zoo multi-GPU unit test of the brightfield_zstack_enhancement bundle (ZSE-GAN), in the zoo's form: its CI
runs it from the root of its repository (``torchrun ci/unit_tests/runner.py --b brightfield_zstack_enhancement
--dist True``).

``configs/multi_gpu_train.json`` over ``train.json`` under torchrun, one process per GPU (two CPU processes with
the gloo backend where there is none), tiny networks on a tiny set of simulated z-stacks.
"""

import os
import shutil
import subprocess
import sys
import tempfile
import unittest

import torch

BUNDLE_ROOT = "models/brightfield_zstack_enhancement"
TINY_TRAIN = [
    "--g_channels", "4", "--g_residual_blocks", "1", "--d_channels", "8", "--crop_size", "32",
    "--sw_roi_size", "[-1, 32, 32]", "--sw_overlap_px", "16", "--n_horizontal", "2", "--n_vertical", "2",
    "--max_epochs", "1",
    "--epoch_length", "2",
]  # fmt: skip


class TestBrightfieldZStackEnhancementMultiGPU(unittest.TestCase):
    def setUp(self):
        if BUNDLE_ROOT not in sys.path:
            sys.path.insert(0, BUNDLE_ROOT)  # the bundle's `scripts` package
        from scripts.simulate.zstacks import simulate_dataset

        self.tmp = tempfile.mkdtemp()
        self.dataset_dir = os.path.join(self.tmp, "data")
        simulate_dataset(self.dataset_dir, n_stacks=4, n_infocus=4, size=40, depth=17, seed=3, progress=False)

    def tearDown(self):
        shutil.rmtree(self.tmp)

    def test_train_multi_gpu(self):
        configs = os.path.join(BUNDLE_ROOT, "configs")
        config_files = [os.path.join(configs, "train.json"), os.path.join(configs, "multi_gpu_train.json")]
        output_dir = os.path.join(self.tmp, "train")
        model_path = os.path.join(output_dir, "model.pt")
        n_processes = torch.cuda.device_count() or 2
        cmd = [
            sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1",
            f"--nproc_per_node={n_processes}", "-m", "monai.bundle", "run", "--config_file", str(config_files),
            "--logging_file", os.path.join(configs, "logging.conf"),
            "--meta_file", os.path.join(configs, "metadata.json"), "--bundle_root", BUNDLE_ROOT,
            "--dataset_dir", self.dataset_dir, "--output_dir", output_dir, "--model_path", model_path, *TINY_TRAIN,
        ]  # fmt: skip
        subprocess.check_call(cmd)
        self.assertTrue(os.path.isfile(model_path))


if __name__ == "__main__":
    unittest.main()
