"""Roles, checked on the server side in every handler (hiding a tab is not a permission)."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from db.session import read_scope
from db.users import authenticate, count_users, get_user
from hala_core.settings import Settings

LAUNCH_ROLES = ("admin", "researcher")
REVIEW_ROLES = ("admin", "researcher", "annotator")
ADMIN_ROLES = ("admin",)


class PermissionDenied(gr.Error):
    pass


@dataclass(frozen=True)
class Caller:
    name: str | None
    role: str


def make_auth(settings: Settings):  # noqa: ANN201
    """The login check handed to Gradio: name and password against the users table."""

    def check(username: str, password: str) -> bool:
        with read_scope(settings.db_url) as s:
            return authenticate(s, username, password) is not None

    return check


def caller(settings: Settings, request: gr.Request | None) -> Caller:
    """Who is calling. With no accounts at all the workbench is single-user and the caller is an admin."""
    name = getattr(request, "username", None) if request is not None else None
    with read_scope(settings.db_url) as s:
        if name:
            user = get_user(s, name)
            if user is None or user.disabled:
                raise PermissionDenied(f"account {name!r} does not exist or is disabled")
            return Caller(name=user.name, role=user.role)
        if count_users(s) == 0:
            return Caller(name=None, role="admin")
    raise PermissionDenied("login required: this workbench has accounts; restart it to get the login page "
                           "if it was started before the first account was added")


def require(settings: Settings, request: gr.Request | None, roles: tuple[str, ...], action: str) -> Caller:
    who = caller(settings, request)
    if who.role not in roles:
        raise PermissionDenied(f"{who.name or 'this account'} is {who.role}: {action} needs the role "
                               f"{' or '.join(roles)}")
    return who
