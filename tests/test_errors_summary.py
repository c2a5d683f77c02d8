"""error_summary: what operators see of an error is its first line, never SQL or parameter values."""

import pytest
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st

from webhook_service.core.errors import MAX_SUMMARY_LENGTH, error_summary

SECRET_EMAIL = "jane.doe@customer.example"


def _integrity_error() -> sa.exc.IntegrityError:
    engine = sa.create_engine("sqlite://")
    with engine.connect() as conn:
        conn.execute(sa.text("CREATE TABLE c (id TEXT PRIMARY KEY, email TEXT)"))
        conn.execute(sa.text("INSERT INTO c VALUES ('cus_1', :email)"), {"email": SECRET_EMAIL})
        try:
            conn.execute(sa.text("INSERT INTO c VALUES ('cus_1', :email)"), {"email": SECRET_EMAIL})
        except sa.exc.IntegrityError as exc:
            return exc
    raise AssertionError("no error")


def test_a_database_error_keeps_its_type_and_message_but_not_the_statement_or_parameters():
    exc = _integrity_error()
    assert "[SQL:" in str(exc) and SECRET_EMAIL in str(exc)  # what SQLAlchemy itself renders
    summary = error_summary(exc)
    assert summary.startswith("IntegrityError: (sqlite3.IntegrityError) UNIQUE constraint failed")
    assert "INSERT" not in summary and SECRET_EMAIL not in summary and "\n" not in summary


def test_stored_text_is_cut_the_same_way():
    stored = (
        "DataError: (psycopg.errors.InvalidTextRepresentation) invalid input syntax for type integer:"
        ' "jane@x.example"\nLINE 1: ...\n[SQL: UPDATE customers SET balance=%(balance)s]\n'
        "[parameters: {'balance': 'jane@x.example'}]"
    )
    assert error_summary(stored) == (
        'DataError: (psycopg.errors.InvalidTextRepresentation) invalid input syntax for type integer: "…"'
    )
    assert error_summary('value "jane@x.example" is out of range for type integer') == (
        'value "…" is out of range for type integer'
    )


@pytest.mark.parametrize("text", ["", "   ", "\n\n"])
def test_empty_text_gives_an_empty_summary(text):
    assert error_summary(text) == ""


@given(st.text())
def test_any_text_gives_one_bounded_line(text):
    summary = error_summary(text)
    assert "\n" not in summary and "\r" not in summary and len(summary) <= MAX_SUMMARY_LENGTH
    assert "[SQL:" not in summary and "[parameters:" not in summary
