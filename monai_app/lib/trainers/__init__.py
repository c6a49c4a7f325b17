from lib.trainers.fracture import Fracture

__all__ = ["Fracture"]
