"""hasql's module name for the balancer policies, kept so imports migrate unchanged."""

from .balancer import BalancerPolicy as AbstractBalancerPolicy
from .policies import GreedyBalancerPolicy, RandomWeightedBalancerPolicy, RoundRobinBalancerPolicy

__all__ = [
    "AbstractBalancerPolicy",
    "GreedyBalancerPolicy",
    "RandomWeightedBalancerPolicy",
    "RoundRobinBalancerPolicy",
]
