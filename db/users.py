"""User accounts and roles. Passwords are hashed with scrypt (a standard memory-hard KDF)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db.models import ROLES, User

_N, _R, _P = 2**14, 8, 1


def hash_password(password: str) -> str:
    salt = os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    return f"scrypt${_N}${_R}${_P}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def check_password(password: str, stored: str) -> bool:
    try:
        algo, n, r, p, salt_b64, digest_b64 = stored.split("$")
    except ValueError:
        return False
    if algo != "scrypt":
        return False
    digest = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt_b64), n=int(n), r=int(r), p=int(p),
                            dklen=32)
    return hmac.compare_digest(digest, base64.b64decode(digest_b64))


def validate_role(role: str) -> str:
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; roles are: {', '.join(ROLES)}")
    return role


def add_user(s: Session, name: str, role: str, password: str) -> User:
    from hala_core.specs import check_name

    check_name(name, "user name")
    validate_role(role)
    if len(password) < 8:
        raise ValueError("password too short: use at least 8 characters")
    if s.scalar(select(User).where(User.name == name)):
        raise ValueError(f"user {name!r} already exists")
    user = User(name=name, role=role, password_hash=hash_password(password))
    s.add(user)
    s.flush()
    return user


def authenticate(s: Session, name: str, password: str) -> User | None:
    user = s.scalar(select(User).where(User.name == name))
    if user is None or user.disabled or not check_password(password, user.password_hash):
        return None
    return user


def count_users(s: Session) -> int:
    return s.scalar(select(func.count(User.id))) or 0


def get_user(s: Session, name: str) -> User | None:
    return s.scalar(select(User).where(User.name == name))


def list_users(s: Session) -> list[User]:
    return list(s.scalars(select(User).order_by(User.name)))


def set_password(s: Session, name: str, password: str) -> None:
    user = get_user(s, name)
    if user is None:
        raise ValueError(f"no user {name!r}")
    if len(password) < 8:
        raise ValueError("password too short: use at least 8 characters")
    user.password_hash = hash_password(password)


def set_role(s: Session, name: str, role: str) -> None:
    user = get_user(s, name)
    if user is None:
        raise ValueError(f"no user {name!r}")
    user.role = validate_role(role)


def remove_user(s: Session, name: str) -> None:
    user = get_user(s, name)
    if user is None:
        raise ValueError(f"no user {name!r}")
    s.delete(user)
