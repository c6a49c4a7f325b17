"""fracseg: bone-fracture segmentation on X-rays."""

from fracseg.errors import DatasetError, FracsegError, ImageReadError

__version__ = "0.1.0"

__all__ = ["DatasetError", "FracsegError", "ImageReadError", "__version__"]
