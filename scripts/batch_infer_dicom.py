"""DICOM batch inference for PACS/IT: a DICOM folder tree or a DICOMweb server in, masks + SEG out.

Thin wrapper over ``fracseg infer`` with DICOM SEG output switched on::

    python scripts/batch_infer_dicom.py /data/pacs_export -o results/
    python scripts/batch_infer_dicom.py --dicomweb http://127.0.0.1:8042/dicom-web --stow -o results/
    python scripts/batch_infer_dicom.py --dicomweb URL --study 1.2.3 --modality CR DX -o results/

Every option of ``fracseg infer`` is accepted (``--bundle``, ``--device``, ``--batch-size``, ...).
"""

from __future__ import annotations

import sys

from fracseg.cli import main

if __name__ == "__main__":
    sys.exit(main(["infer", "--dicom-seg", *sys.argv[1:]]))
