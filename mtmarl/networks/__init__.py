"""Networks: Sable retention encoder-decoder and the HL-Gauss value head."""

from mtmarl.networks.hl_gauss import HLGauss
from mtmarl.networks.sable import NEG, Outputs, SableConfig, SableNet, load_preset, make_sable

__all__ = ["HLGauss", "NEG", "Outputs", "SableConfig", "SableNet", "load_preset", "make_sable"]
