"""Secrets live in the OS keyring only: never in specs, logs, graphs or the database.

When no keyring backend exists (headless Linux), the `HF_TOKEN` environment variable is the
documented alternative.
"""

from __future__ import annotations

import os

SERVICE = "tunegraph"
HF_TOKEN_KEY = "huggingface-token"


def keyring_available() -> bool:
    """True when a real (not the 'fail') keyring backend is configured."""
    try:
        import keyring
        from keyring.backends import fail

        return not isinstance(keyring.get_keyring(), fail.Keyring)
    except Exception:
        return False


def get_hf_token() -> str | None:
    """The Hugging Face token: the keyring entry, else $HF_TOKEN, else None."""
    try:
        import keyring

        token = keyring.get_password(SERVICE, HF_TOKEN_KEY)
        if token:
            return token
    except Exception:
        pass
    return os.environ.get("HF_TOKEN") or None


def set_hf_token(token: str) -> None:
    """Store the token in the keyring (raises keyring's error when there is no backend)."""
    import keyring

    keyring.set_password(SERVICE, HF_TOKEN_KEY, token)


def clear_hf_token() -> None:
    """Remove the token from the keyring (nothing happens when none is stored)."""
    import keyring
    from keyring.errors import PasswordDeleteError

    try:
        keyring.delete_password(SERVICE, HF_TOKEN_KEY)
    except PasswordDeleteError:
        pass
