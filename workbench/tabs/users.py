"""Users (admins only): accounts and roles. The first account turns the login page on."""

from __future__ import annotations

import gradio as gr

from db import users
from db.models import ROLES
from db.session import read_scope, session_scope
from hala_core.settings import Settings
from workbench.auth import ADMIN_ROLES, require

HELP = ("Roles: **admin** (everything, accounts), **researcher** (launch and manage runs), **annotator** "
        "(review translations; cannot launch jobs). While no account exists the workbench is single-user; "
        "adding the first account turns the login page on.")


def user_rows(settings: Settings) -> list[list[str]]:
    with read_scope(settings.db_url) as s:
        return [[u.name, u.role, "disabled" if u.disabled else ""] for u in users.list_users(s)]


def build(demo: gr.Blocks, settings: Settings) -> None:
    gr.Markdown(HELP)
    table = gr.Dataframe(headers=["name", "role", "state"], interactive=False, elem_id="users-table")
    with gr.Row():
        name = gr.Textbox(label="name")
        role = gr.Dropdown(list(ROLES), value="researcher", label="role")
        password = gr.Textbox(label="password (8+ characters)", type="password")
        add = gr.Button("Add / set role", variant="primary")
    msg = gr.Markdown()

    def on_add(n: str, r: str, p: str, request: gr.Request):  # noqa: ANN202
        require(settings, request, ADMIN_ROLES, "managing accounts")
        try:
            with session_scope(settings.db_url) as s:
                if users.get_user(s, n.strip()):
                    users.set_role(s, n.strip(), r)
                    if p:
                        users.set_password(s, n.strip(), p)
                    text = f"{n} is now {r}"
                else:
                    users.add_user(s, n.strip(), r, p)
                    text = f"user {n} added as {r}; sign-in is required from now on"
        except ValueError as e:
            raise gr.Error(str(e)) from None
        return user_rows(settings), text, ""

    def on_load(request: gr.Request):  # noqa: ANN202
        try:
            require(settings, request, ADMIN_ROLES, "managing accounts")
        except gr.Error:
            return [], "Only admins manage accounts."
        return user_rows(settings), ""

    add.click(on_add, [name, role, password], [table, msg, password], api_name="add_user")
    demo.load(on_load, None, [table, msg], api_visibility="private")
