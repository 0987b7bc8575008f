"""A unit test in the MONAI Model Zoo's ``ci/unit_tests`` style for the brain_mri_pet_fusion bundle: train,
evaluate and infer on generated data, each workflow's properties checked first.

In a model-zoo checkout it runs as ``python ci/unit_tests/runner.py --b brain_mri_pet_fusion`` (the bundle in
``models/brain_mri_pet_fusion``); in this repository pytest runs it on ``bundle/``. Weights and outputs go to a
temporary folder, so the bundle's own ``models/`` is never overwritten.
"""

import json
import os
import shutil
import sys
import tempfile
import unittest

import nibabel as nib
import numpy as np
from monai.bundle import ConfigWorkflow
from parameterized import parameterized

ZOO_BUNDLE_ROOT = "models/brain_mri_pet_fusion"
BUNDLE_ROOT = os.path.abspath(
    ZOO_BUNDLE_ROOT
    if os.path.isdir(ZOO_BUNDLE_ROOT)
    else os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "bundle")
)

TEST_CASE_1 = [  # train, evaluate
    {
        "max_epochs": 1,
        "patch_size": [32, 32, 32],
        "val_roi_size": [32, 32, 32],
        "train#dataset#cache_rate": 0.0,
        "validate#dataset#cache_rate": 0.0,
    }
]

TEST_CASE_2 = [{"handlers#0#_disabled_": True}]  # inference, untrained weights


def check_workflow(workflow: ConfigWorkflow, check_properties: bool = False):
    """As the Zoo's ``ci/unit_tests/utils.check_workflow``: initialize, check the properties, run, finalize."""
    workflow.initialize()
    if check_properties:
        check_result = workflow.check_properties()
        if check_result is not None and len(check_result) > 0:
            raise ValueError(f"check properties for workflow failed: {check_result}")
    workflow.run()
    workflow.finalize()


def test_order(test_name1, test_name2):
    def get_order(name):
        return 1 if "train" in name else 2 if "eval" in name else 3 if "infer" in name else 4

    return get_order(test_name1) - get_order(test_name2)


test_order.__test__ = False  # the Zoo's runner sorts tests with it; pytest must not collect it as a test


class TestBrainMRIPETFusion(unittest.TestCase):
    def setUp(self):
        if BUNDLE_ROOT not in sys.path:  # the configs name the bundle's own scripts.* modules
            sys.path.insert(0, BUNDLE_ROOT)
        self.dataset_dir = tempfile.mkdtemp()
        self.work_dir = tempfile.mkdtemp()
        rng = np.random.default_rng(0)
        items = []
        for s in range(4):
            mri = rng.random((40, 44, 36)).astype(np.float32)
            pet = rng.random((20, 22, 18)).astype(np.float32)  # PET on its own, coarser grid
            nib.save(nib.Nifti1Image(mri, np.eye(4)), os.path.join(self.dataset_dir, f"mri_{s}.nii.gz"))
            nib.save(
                nib.Nifti1Image(pet, np.diag([2.0, 2.0, 2.0, 1.0])), os.path.join(self.dataset_dir, f"pet_{s}.nii.gz")
            )
            items.append({"id": str(s), "mri": f"mri_{s}.nii.gz", "pet": f"pet_{s}.nii.gz"})
        with open(os.path.join(self.dataset_dir, "datalist.json"), "w") as f:
            json.dump({"training": items[:2], "validation": items[2:3], "testing": items[3:]}, f)

    def tearDown(self):
        shutil.rmtree(self.dataset_dir)
        shutil.rmtree(self.work_dir)

    def _workflow(self, workflow_type, files, override):
        override = {
            **override,
            "bundle_root": BUNDLE_ROOT,
            "dataset_dir": self.dataset_dir,
            "ckpt_dir": os.path.join(self.work_dir, "models"),
            "output_dir": os.path.join(self.work_dir, "eval"),
        }
        return ConfigWorkflow(
            workflow_type=workflow_type,
            config_file=[os.path.join(BUNDLE_ROOT, "configs", f) for f in files],
            logging_file=os.path.join(BUNDLE_ROOT, "configs/logging.conf"),
            meta_file=os.path.join(BUNDLE_ROOT, "configs/metadata.json"),
            **override,
        )

    @parameterized.expand([TEST_CASE_1])
    def test_train_eval_config(self, override):
        check_workflow(self._workflow("train", ["train.json"], override), check_properties=True)
        self.assertTrue(os.path.isfile(os.path.join(self.work_dir, "models", "model.pt")))
        # evaluate.json overrides train.json, so the workflow type stays "train"
        check_workflow(self._workflow("train", ["train.json", "evaluate.json"], override), check_properties=True)
        self.assertTrue(os.path.isfile(os.path.join(self.work_dir, "eval", "metrics.csv")))

    @parameterized.expand([TEST_CASE_2])
    def test_infer_config(self, override):
        check_workflow(self._workflow("infer", ["inference.json"], override), check_properties=True)
        fused = os.path.join(self.work_dir, "eval", os.path.basename(self.dataset_dir), "mri_3_fused.nii.gz")
        self.assertEqual(nib.load(fused).shape, (40, 44, 36))


if __name__ == "__main__":
    loader = unittest.TestLoader()
    loader.sortTestMethodsUsing = test_order
    unittest.main(testLoader=loader)
