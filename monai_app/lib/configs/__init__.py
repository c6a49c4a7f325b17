from lib.configs.fracture import Fracture

__all__ = ["Fracture"]
