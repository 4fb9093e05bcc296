"""Sign-in and password forms. CSRF is checked for every POST by CSRFProtect."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import EmailField, PasswordField, SelectChoice, SelectField

from followup.accounts.models import ROLES


class LoginForm(FlaskForm):  # type: ignore[misc]
    class Meta:
        csrf = False  # the template adds the token; CSRFProtect checks it

    email = EmailField("Email")
    password = PasswordField("Password")


class PasswordForm(FlaskForm):  # type: ignore[misc]
    class Meta:
        csrf = False

    current_password = PasswordField("Current password")
    new_password = PasswordField("New password")
    confirm_password = PasswordField("New password again")


class NewUserForm(FlaskForm):  # type: ignore[misc]
    class Meta:
        csrf = False

    email = EmailField("Email")
    role = SelectField("Role", choices=[SelectChoice(role, role.capitalize()) for role in ROLES])
    password = PasswordField("Password (at least 12 characters)")
