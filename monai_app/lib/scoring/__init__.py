from lib.scoring.fracture_uncertainty import FractureUncertainty

__all__ = ["FractureUncertainty"]
