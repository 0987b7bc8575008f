"""Data tools of DCFB Fusion: a simulated MRI/FDG-PET cohort built on the MNI152 2009 template,
and its export as DICOM studies as a hospital would hold them."""
