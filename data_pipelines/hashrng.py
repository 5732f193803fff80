"""Counter-based random numbers: uniforms as a pure function of (key, counter), vectorised.

Random access needs randomness that does not depend on what was drawn before: the masks of
example i in epoch e must be the same whether it is read in a batch of 8 or of 4096, by one
process or by four, at step 10 or after a resume at step 100,000. So every draw is a hash of
(seed, salt, epoch, example index, counter) through splitmix64's finaliser (Steele, Lea and
Flood 2014), whose output passes BigCrush; `numpy.random` generators are sequential instead.
"""

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser, elementwise over uint64 (wrapping arithmetic is intended)."""
    x = np.asarray(x, np.uint64)
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * _M1
        x = (x ^ (x >> np.uint64(27))) * _M2
    return x ^ (x >> np.uint64(31))


def keys(seed: int, salt: int, *counters: np.ndarray) -> np.ndarray:
    """One uint64 key per element of the broadcast counters (e.g. epoch [n], index [n])."""
    key = mix(np.uint64((int(seed) & 0xFFFFFFFFFFFFFFFF) ^ (salt * 0x2545F4914F6CDD1D % 2**64)))
    for c in counters:
        with np.errstate(over="ignore"):
            key = mix(key ^ (np.asarray(c).astype(np.uint64) * _GOLDEN))
    return key


def uniform(key: np.ndarray, n: int, offset: int = 0) -> np.ndarray:
    """[*key.shape, n] float64 uniforms in [0, 1): draws offset .. offset + n - 1 of each key."""
    counter = np.arange(offset, offset + n, dtype=np.uint64) + np.uint64(1)
    with np.errstate(over="ignore"):
        bits = mix(key[..., None] + counter * _GOLDEN)
    return (bits >> np.uint64(11)).astype(np.float64) * 2.0**-53
