"""A real IMAP and POP3 server for the bounce-mailbox tests: Debian's Dovecot, started on free
ports on 127.0.0.1 with a throwaway configuration, one user and a Maildir in a temporary folder.

Dovecot runs its mail processes as an unprivileged user: as root that is `nobody` (the folder is
handed to it); otherwise everything runs as the current user.
"""

from __future__ import annotations

import imaplib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from crm.outbox.server import free_port

DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"
USER, PASSWORD = "bounces", "bounce-box-password"

CONFIG = """
protocols = imap pop3
listen = 127.0.0.1
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
mail_location = maildir:{root}/mail/%u
first_valid_uid = 1
mail_uid = {uid}
mail_gid = {gid}
default_internal_user = {internal}
default_internal_group = {internal_group}
default_login_user = {login}
mail_max_userip_connections = 100
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/passwd
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={root}/home/%u
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    port = {imap_port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service pop3-login {{
  chroot =
  inet_listener pop3 {{
    port = {pop3_port}
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
service anvil {{
  chroot =
}}
namespace inbox {{
  inbox = yes
  separator = /
}}
"""


def available() -> bool:
    return os.path.exists(DOVECOT)


class Dovecot:
    def __init__(self):
        self.root = Path(tempfile.mkdtemp(prefix="crm-dovecot-"))
        self.imap_port, self.pop3_port = free_port(), free_port()
        if os.geteuid() == 0:
            mail = pwd.getpwnam("nobody")
            internal = "dovecot" if _user_exists("dovecot") else "nobody"
            login = "dovenull" if _user_exists("dovenull") else "nobody"
        else:
            mail = pwd.getpwuid(os.geteuid())
            internal = login = mail.pw_name
        import grp

        for sub in ("run", "state", "mail", "home"):
            (self.root / sub).mkdir()
        (self.root / "passwd").write_text(f"{USER}:{{PLAIN}}{PASSWORD}:::::\n")
        (self.root / "dovecot.conf").write_text(CONFIG.format(
            root=self.root, uid=mail.pw_uid, gid=mail.pw_gid, internal=internal,
            internal_group=grp.getgrgid(pwd.getpwnam(internal).pw_gid).gr_name, login=login,
            imap_port=self.imap_port, pop3_port=self.pop3_port))
        if os.geteuid() == 0:
            for path in (self.root / "mail", self.root / "home"):
                os.chown(path, mail.pw_uid, mail.pw_gid)
            os.chmod(self.root, 0o755)
        self.process = subprocess.Popen([DOVECOT, "-F", "-c", str(self.root / "dovecot.conf")],
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"dovecot exited: {self.process.stdout.read().decode()} {self.log()}")
            try:
                socket.create_connection(("127.0.0.1", self.imap_port), timeout=0.2).close()
                socket.create_connection(("127.0.0.1", self.pop3_port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        else:
            self.stop()
            raise RuntimeError(f"dovecot did not start: {self.log()}")

    def log(self) -> str:
        path = self.root / "dovecot.log"
        return path.read_text() if path.exists() else ""

    def url(self, scheme: str = "imap", folder: str = "INBOX", **query) -> str:
        port = self.imap_port if scheme == "imap" else self.pop3_port
        suffix = f"/{folder}" if scheme == "imap" else ""
        qs = "&".join(f"{k}={v}" for k, v in query.items())
        return f"{scheme}://{USER}:{PASSWORD}@127.0.0.1:{port}{suffix}" + (f"?{qs}" if qs else "")

    def imap(self) -> imaplib.IMAP4:
        conn = imaplib.IMAP4("127.0.0.1", self.imap_port, timeout=10)
        conn.login(USER, PASSWORD)
        return conn

    def append(self, messages: list[bytes], folder: str = "INBOX") -> None:
        conn = self.imap()
        try:
            for raw in messages:
                typ, data = conn.append(folder, None, None, raw)
                assert typ == "OK", data
        finally:
            conn.logout()

    def count(self, folder: str = "INBOX") -> int:
        conn = self.imap()
        try:
            typ, data = conn.select(f'"{folder}"', readonly=True)
            return int(data[0]) if typ == "OK" else 0
        finally:
            conn.logout()

    def empty(self) -> None:
        conn = self.imap()
        try:
            typ, folders = conn.list()
            for line in folders or []:
                name = line.decode().rsplit(' "/" ', 1)[-1].strip('"')
                typ, data = conn.select(f'"{name}"')
                if typ == "OK":
                    if int(data[0]):
                        conn.store("1:*", "+FLAGS.SILENT", r"(\Deleted)")
                        conn.expunge()
                    conn.close()
        finally:
            conn.logout()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.root, ignore_errors=True)


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True
