"""eSpeak NG phoneme mnemonics and Flite's phones -> TIMIT's 61 symbols."""

from __future__ import annotations

from tools.mini_timit.errors import UnmappedFlitePhoneError, UnmappedPhonemeError

# What eSpeak's English phoneme tables produce for the generator's sentences,
# mapped to the nearest TIMIT symbols (a tuple: some mnemonics are two phones).
_MNEMONICS = {
    # vowels
    "a": ("ae",),
    "a/": ("ae",),
    "aa": ("ae",),
    "a#": ("ax",),
    "A:": ("aa",),
    "A@": ("aa",),
    "0": ("aa",),
    "O": ("ao",),
    "O:": ("ao",),
    "O2": ("ao",),
    "O@": ("ao",),
    "o@": ("ao",),
    "V": ("ah",),
    "@": ("ax",),
    "@2": ("ax",),
    "@5": ("ax",),
    "3": ("ax",),
    "3:": ("er",),
    "IR": ("er",),
    "VR": ("er",),
    "@L": ("el",),
    "E": ("eh",),
    "e@": ("eh", "ax"),
    "eI": ("ey",),
    "I": ("ih",),
    "I2": ("ih",),
    "I#": ("ix",),
    "i": ("iy",),
    "i:": ("iy",),
    "i@": ("iy", "ax"),
    "i@3": ("ih", "ax"),
    "U": ("uh",),
    "U@": ("uh", "ax"),
    "u:": ("uw",),
    "aI": ("ay",),
    "aI2": ("ay",),
    "aI@": ("ay", "ax"),
    "aI3": ("ay", "axr"),
    "aU": ("aw",),
    "aU@": ("aw", "ax"),
    "oU": ("ow",),
    "OI": ("oy",),
    # consonants
    "p": ("p",),
    "b": ("b",),
    "t": ("t",),
    "t2": ("t",),
    "t[": ("t",),
    "d": ("d",),
    "d[": ("d",),
    "t#": ("dx",),
    "d#": ("dx",),
    "k": ("k",),
    "g": ("g",),
    "?": ("q",),
    "tS": ("ch",),
    "dZ": ("jh",),
    "f": ("f",),
    "v": ("v",),
    "T": ("th",),
    "D": ("dh",),
    "s": ("s",),
    "z": ("z",),
    "S": ("sh",),
    "Z": ("zh",),
    "h": ("hh",),
    "x": ("hh",),
    "m": ("m",),
    "n": ("n",),
    "N": ("ng",),
    "m-": ("em",),
    "n-": ("en",),
    "l": ("l",),
    "l/": ("l",),
    "r": ("r",),
    "r-": ("r",),
    "w": ("w",),
    "w#": ("w",),
    "j": ("y",),
    ";": ("y",),  # the glide eSpeak inserts after i before a vowel
}

# Where an accent realises a phoneme differently (eSpeak's IPA output for the
# accent), the nearest TIMIT symbols for that realisation.
_ACCENT_MNEMONICS = {
    "en-us": {
        "A@": ("aa", "r"),
        "e@": ("eh", "r"),
        "O@": ("ao", "r"),
        "o@": ("ao", "r"),
        "U@": ("uh", "r"),
        "i@3": ("ih", "r"),
        "3": ("axr",),
    },
    "en-gb-x-rp": {"aa": ("aa",), "U@": ("ao",), "i": ("ih",)},
    "en-gb-scotland": {
        # Scottish English is rhotic: eSpeak writes the r as its own phoneme.
        "e@": ("eh",),
        "i@3": ("ih",),
        "o@": ("ow",),
        "U": ("ux",),
        "u:": ("ux",),
        "U@": ("ux", "r"),
        "i": ("ih",),
        "3:": ("eh",),
    },
    "en-gb-x-gbclan": {"V": ("uh",)},
    "en-gb-x-gbcwmd": {
        "V": ("uh",),
        "aI": ("oy",),
        "i:": ("ey",),
        "u:": ("ow",),
        "e@": ("er",),
    },
    "en-029": {"A@": ("aa",), "O@": ("ao",), "o@": ("ow",)},
    "en-us-nyc": {},
    "en": {},
}

_STRESS_MARKS = "'\",%=!"


def _is_pause(mnemonic):
    return mnemonic.startswith("_") and mnemonic != "_^_"


def phones_for_mnemonic(mnemonic: str, accent: str) -> tuple[str, ...]:
    """Returns the TIMIT symbols for one eSpeak phoneme mnemonic.

    Stress marks (``'``, ``,`` ...) are stripped; a trailing length mark ``:``
    is dropped when the mnemonic with it is not in the table. Pauses (``_``,
    ``_:``, ``_!`` ...) are ``("pau",)``; the language switch marker ``_^_`` is
    no phone at all (``()``).

    Arguments
    ---------
    mnemonic : str
        As eSpeak reports it in a phoneme event, e.g. ``"'A@"``.
    accent : str
        The eSpeak voice (accent) that produced it, e.g. ``"en-us"``.

    Returns
    -------
    tuple of str
        One or two TIMIT symbols.

    Raises
    ------
    UnmappedPhonemeError
        When the mnemonic is not in the table.

    Example
    -------
    >>> phones_for_mnemonic("'A@", "en-us")
    ('aa', 'r')
    >>> phones_for_mnemonic("'A@", "en")
    ('aa',)
    """
    if mnemonic == "_^_":
        return ()
    if _is_pause(mnemonic):
        return ("pau",)
    name = mnemonic.lstrip(_STRESS_MARKS)
    table = _ACCENT_MNEMONICS.get(accent, {})
    for key in (name, name.rstrip(":")):
        if key in table:
            return table[key]
        if key in _MNEMONICS:
            return _MNEMONICS[key]
    raise UnmappedPhonemeError(mnemonic, accent)


# Flite's US English phones (CMU's set, as its lexicon cmulex and its letter-
# to-sound rules write them, with ``ax`` for an unstressed ``ah`` and ``pau``
# for silence) -> TIMIT's symbols. CMU's set is TIMIT's without its allophones
# (no closures, flaps, ``ix``, ``axr``, ``hv``...): every phone keeps its
# name. Stops get their closures in ``align`` as eSpeak's do.
_FLITE_PHONES = {
    phone: (phone,)
    for phone in (
        # vowels and diphthongs
        "aa ae ah ao aw ax ay eh er ey ih iy ow oy uh uw "
        # stops and affricates
        "b d g k p t ch jh "
        # fricatives, nasals, liquids and glides
        "dh f hh s sh th v z zh m n ng l r w y"
    ).split()
}
_FLITE_PHONES["pau"] = ("pau",)


def phones_for_flite(phone: str, voice: str) -> tuple[str, ...]:
    """Returns the TIMIT symbols for one of Flite's phones.

    Arguments
    ---------
    phone : str
        A segment name of Flite's utterance, e.g. ``"aa"`` or ``"pau"``.
    voice : str
        The Flite voice that produced it (for the error message).

    Raises
    ------
    UnmappedFlitePhoneError
        When the phone is not in the table.

    Example
    -------
    >>> phones_for_flite("ax", "slt")
    ('ax',)
    >>> phones_for_flite("pau", "awb")
    ('pau',)
    """
    try:
        return _FLITE_PHONES[phone]
    except KeyError:
        raise UnmappedFlitePhoneError(phone, voice) from None
