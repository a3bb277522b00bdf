"""hybridlib: CNN, CNN+LSTM, CNN+LSTM with skip connections and auto-encoder
image classifiers, rebuilt from two papers for an interactive course.

Paper A: Yilmaz, Kirman, Odabasi, Buzcu, "Image Classification Using CNN-LSTM
Hybrid Model With Skip Connections" (Ozyegin University, CS 554).
Paper B: Yu, Zhou, Gong, Sun, Shi, Ou, "Research on Image Feature Recognition
Based on Convolution-Long Short Term Memory Network" (Jiangnan University).

Run `python -m hybridlib --help` for the command line.
"""

__version__ = "0.1.0"

from hybridlib.errors import HybridError
from hybridlib.paths import data_root, runs_root

__all__ = ["HybridError", "__version__", "data_root", "runs_root"]
