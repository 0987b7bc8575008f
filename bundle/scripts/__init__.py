# Bundle code referenced by the configs as ``scripts.*`` (bundle_root is put on sys.path by MONAI).
