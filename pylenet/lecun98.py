"""The fixed data of the 1998 LeNet-5 (LeCun, Bottou, Bengio, Haffner, "Gradient-based learning
applied to document recognition", Proc. IEEE 86(11), 1998), used by LeNet5(variant="lecun98").

C3_CONNECTIONS is Table I: which of S2's 6 maps each of C3's 16 maps reads. RBF_CODES are the
7x12 stylized digit bitmaps of Fig. 3 that the output RBF units compare F6's 84 outputs with
("#" = +1, "." = -1, row by row). They were transcribed here from Fig. 3 and checked against
a public transcription (github.com/AlgorithmicIntelligence/quantization_lenet, RBF_BITMAP.py);
several digits keep the figure's quirk of a top bar over an empty row.
"""
from __future__ import annotations

# Table I: C3 map k reads these S2 maps. 0-5: three contiguous maps, 6-11: four contiguous,
# 12-14: four non-contiguous, 15: all six (60 connections of 5x5 weights: 1,500 + 16 biases).
C3_INPUTS = (
    (0, 1, 2), (1, 2, 3), (2, 3, 4), (3, 4, 5), (4, 5, 0), (5, 0, 1),
    (0, 1, 2, 3), (1, 2, 3, 4), (2, 3, 4, 5), (3, 4, 5, 0), (4, 5, 0, 1), (5, 0, 1, 2),
    (0, 1, 3, 4), (1, 2, 4, 5), (0, 2, 3, 5),
    (0, 1, 2, 3, 4, 5),
)
# The same table as MaskedConv2d's 0/1 connections (16 rows of 6).
C3_CONNECTIONS = tuple(tuple(int(c in inputs) for c in range(6)) for inputs in C3_INPUTS)

_BITMAPS = """
.#####. ...##.. .#####. ####### .#####. .#####. ..####. ####### .#####. .#####.
....... ..###.. ....... .....## ....... ....... .##.... .....## ##...## ##..###
..###.. .####.. .#####. ....##. ....... ####### ##..... .....## ##...## ##...##
.##.##. ...##.. ##...## ...##.. .##..## ##..... ##..... ....##. ##...## ##...##
##...## ...##.. #....## ..####. .##..## ##..... ######. ...##.. .#####. ##..###
##...## ...##.. ....##. .....## ###..## .####.. ###..## ...##.. ##...## .######
##...## ...##.. ..###.. .....## ##...## ..####. ##...## ..##... ##...## .....##
##...## ...##.. .##.... .....## ##...## .....## ##...## ..##... ##...## .....##
.##.##. ...##.. ##..... ##...## ##..### ##...## ###..## ..##... ##...## ....##.
..###.. .###### ####### .#####. .###### .#####. .#####. ..##... .#####. .####..
....... ....... ....... ....... .....## ....... ....... ....... ....... .......
....... ....... ....... ....... .....## ....... ....... ....... ....... .......
"""
_ROWS = [line.split() for line in _BITMAPS.strip().splitlines()]
# RBF_CODES[d]: digit d's 84 targets (+1.0 / -1.0), its 12 rows of 7 concatenated.
RBF_CODES = tuple(tuple(1.0 if ch == "#" else -1.0 for row in _ROWS for ch in row[d])
                  for d in range(10))
CODE_SHAPE = (12, 7)  # rows x columns of one bitmap

# The paper's input levels: background (white) -0.1, foreground (black) 1.175, "so that the
# mean input is roughly 0 and the variance roughly 1".
BACKGROUND, FOREGROUND = -0.1, 1.175
# Its weight initialisation: uniform in +-INIT_SCALE / F_in, F_in the unit's fan-in.
INIT_SCALE = 2.4

