"""Errors of the mini corpus maker (they cross from worker processes)."""

from __future__ import annotations


class MiniTimitError(RuntimeError):
    """Raised when the mini corpus cannot be made; says what to do."""


class UnmappedPhonemeError(MiniTimitError, KeyError):
    """An eSpeak phoneme mnemonic has no TIMIT counterpart in the table."""

    def __init__(self, mnemonic, accent):
        self.mnemonic = mnemonic
        self.accent = accent
        super().__init__(
            f"eSpeak phoneme mnemonic {mnemonic!r} (accent {accent}) has no TIMIT "
            "counterpart; add it to tools.mini_timit.phones._MNEMONICS (or to the "
            "accent's entry of _ACCENT_MNEMONICS)"
        )

    def __str__(self):  # KeyError would quote the message
        return self.args[0]

    def __reduce__(self):  # picklable (it crosses from worker processes)
        return (type(self), (self.mnemonic, self.accent))


class UnmappedFlitePhoneError(MiniTimitError, KeyError):
    """A Flite phone has no TIMIT counterpart in the table."""

    def __init__(self, phone, voice):
        self.phone = phone
        self.voice = voice
        super().__init__(
            f"Flite phone {phone!r} (voice {voice}) has no TIMIT counterpart; add "
            "it to tools.mini_timit.phones._FLITE_PHONES"
        )

    def __str__(self):
        return self.args[0]

    def __reduce__(self):
        return (type(self), (self.phone, self.voice))
