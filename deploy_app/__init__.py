"""DCFB Fusion as a MONAI Deploy App SDK application: a DICOM MR + PT study in, fused DICOM series out."""
