from lib.infers.fracture import Fracture
from lib.infers.fracture_interactive import FractureInteractive

__all__ = ["Fracture", "FractureInteractive"]
