"""One module per operator of the fusion application's graph (see ``deploy_app/app.py``)."""

from .dicom_study_loader import CheckedDICOMDataLoaderOperator
from .fused_series_writer import FusedSeriesWriterOperator
from .fusion_inference import FusionInferenceOperator
from .pet_mr_alignment import PetMrAlignmentOperator
from .series_volume import SeriesVolumeOperator

__all__ = [
    "CheckedDICOMDataLoaderOperator",
    "FusedSeriesWriterOperator",
    "FusionInferenceOperator",
    "PetMrAlignmentOperator",
    "SeriesVolumeOperator",
]
