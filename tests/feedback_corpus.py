"""Real-shaped bounce mail for the mailbox tests, written after the standards and the notices
the common servers send: RFC 3464 DSNs (Postfix, Gmail), DSN-less notices (Exchange, Gmail's
older plain text, Postfix without its report part, qmail), ARF complaints (RFC 5965) and mail
that is no report at all. CRLF line ends, as mail on the wire has."""

from __future__ import annotations

DOMAIN = "news.example.org"


def _crlf(text: str) -> bytes:
    return text.lstrip("\n").replace("\r\n", "\n").replace("\n", "\r\n").encode("utf-8")


def returned_headers(message, address: str) -> str:
    return (f"Return-Path: <bounces@{DOMAIN}>\n"
            f"From: Test Org <updates@{DOMAIN}>\n"
            f"To: {address}\n"
            "Subject: Our periodic update\n"
            "Date: Tue, 02 Dec 2026 10:00:00 +0000\n"
            f"Message-ID: {message.smtp_message_id}\n"
            f"X-Message-Ref: {message.campaign_id}.{message.id}\n"
            "List-Unsubscribe-Post: List-Unsubscribe=One-Click\n"
            "MIME-Version: 1.0\n")


def postfix_dsn(message, address: str, status: str = "5.1.1", action: str = "failed",
                diagnostic: str = "smtp; 550 5.1.1 <{a}>: Recipient address rejected: User unknown in virtual "
                                  "mailbox table", n: int = 1) -> bytes:
    """Postfix's bounce: multipart/report with message/delivery-status and text/rfc822-headers."""
    return _crlf(f"""
Return-Path: <>
Delivered-To: bounces@{DOMAIN}
Received: by mx.{DOMAIN} (Postfix) id 3F1A2C0{n:04d}; Tue,  2 Dec 2026 10:00:05 +0000 (UTC)
Date: Tue,  2 Dec 2026 10:00:05 +0000 (UTC)
From: MAILER-DAEMON@mx.{DOMAIN} (Mail Delivery System)
Subject: Undelivered Mail Returned to Sender
To: bounces@{DOMAIN}
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status;
	boundary="3F1A2C0{n:04d}.1733133605/mx.{DOMAIN}"
Message-Id: <20261202100005.3F1A2C0{n:04d}@mx.{DOMAIN}>

This is a MIME-encapsulated message.

--3F1A2C0{n:04d}.1733133605/mx.{DOMAIN}
Content-Description: Notification
Content-Type: text/plain; charset=us-ascii

This is the mail system at host mx.{DOMAIN}.

I'm sorry to have to inform you that your message could not
be delivered to one or more recipients. It's attached below.

<{address}>: host mx.example.net[192.0.2.25] said: 550 {status} <{address}>:
    Recipient address rejected (in reply to RCPT TO command)

--3F1A2C0{n:04d}.1733133605/mx.{DOMAIN}
Content-Description: Delivery report
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.{DOMAIN}
X-Postfix-Queue-ID: 3F1A2C0{n:04d}
X-Postfix-Sender: rfc822; bounces@{DOMAIN}
Arrival-Date: Tue,  2 Dec 2026 10:00:00 +0000 (UTC)

Final-Recipient: rfc822; {address}
Original-Recipient: rfc822;{address}
Action: {action}
Status: {status}
Remote-MTA: dns; mx.example.net
Diagnostic-Code: {diagnostic.format(a=address)}

--3F1A2C0{n:04d}.1733133605/mx.{DOMAIN}
Content-Description: Undelivered Message Headers
Content-Type: text/rfc822-headers

{returned_headers(message, address)}
--3F1A2C0{n:04d}.1733133605/mx.{DOMAIN}--
""")


def gmail_dsn(message, address: str) -> bytes:
    """Gmail's "Delivery Status Notification (Failure)": report part and the whole message returned."""
    return _crlf(f"""
Delivered-To: bounces@{DOMAIN}
Return-Path: <>
From: Mail Delivery Subsystem <mailer-daemon@googlemail.com>
To: bounces@{DOMAIN}
Auto-Submitted: auto-replied
Subject: Delivery Status Notification (Failure)
Message-ID: <5f9c1a2b.170a0220.gmail-dsn-{message.id}@mx.google.com>
Date: Tue, 02 Dec 2026 02:00:07 -0800 (PST)
MIME-Version: 1.0
Content-Type: multipart/report; boundary="000000000000a1b2c3"; report-type=delivery-status

--000000000000a1b2c3
Content-Type: multipart/related; boundary="000000000000a1b2c4"

--000000000000a1b2c4
Content-Type: text/plain; charset="UTF-8"

** Address not found **

Your message wasn't delivered to {address} because the address couldn't be found, or is unable to receive mail.

The response from the remote server was:
550 5.1.1 The email account that you tried to reach does not exist. Please try double-checking the
recipient's email address for typos or unnecessary spaces.

--000000000000a1b2c4--

--000000000000a1b2c3
Content-Type: message/delivery-status

Reporting-MTA: dns; googlemail.com
Received-From-MTA: dns; updates@{DOMAIN}
Arrival-Date: Tue, 02 Dec 2026 02:00:06 -0800 (PST)
X-Original-Message-ID: {message.smtp_message_id}

Final-Recipient: rfc822; {address}
Action: failed
Status: 5.1.1
Diagnostic-Code: smtp; 550-5.1.1 The email account that you tried to reach does not exist. Please try
 550-5.1.1 double-checking the recipient's email address for typos or
 550 5.1.1 unnecessary spaces. https://support.google.com/mail/?p=NoSuchUser - gsmtp
Last-Attempt-Date: Tue, 02 Dec 2026 02:00:07 -0800 (PST)

--000000000000a1b2c3
Content-Type: message/rfc822

{returned_headers(message, address)}Content-Type: text/plain; charset="utf-8"

Hello friend, here is our periodic update.

--000000000000a1b2c3--
""")


def exchange_ndr(message, address: str) -> bytes:
    """An Exchange / Outlook NDR as plain text only, the original headers quoted in the body."""
    quoted = returned_headers(message, address)
    return _crlf(f"""
From: postmaster@corp.example.com
To: bounces@{DOMAIN}
Date: Tue, 2 Dec 2026 10:01:00 +0000
Subject: Undeliverable: Our periodic update
Message-ID: <ndr-{message.id}@corp.example.com>
MIME-Version: 1.0
Content-Type: text/plain; charset="us-ascii"
X-MS-Exchange-Message-Is-Ndr:

Delivery has failed to these recipients or groups:

{address}
The email address you entered couldn't be found. Please check the recipient's email address and try to resend
the message. If the problem continues, please contact your helpdesk.

Diagnostic information for administrators:

Generating server: EX01.corp.example.com

{address}
Remote Server returned '550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup'

Original message headers:

{quoted}""")


def gmail_plain(message, address: str) -> bytes:
    """Gmail's older plain-text notice: no report part, headers quoted after the text."""
    return _crlf(f"""
From: Mail Delivery Subsystem <mailer-daemon@googlemail.com>
To: bounces@{DOMAIN}
Subject: Delivery Status Notification (Failure)
Message-ID: <plain-{message.id}@mx.google.com>
Date: Tue, 02 Dec 2026 02:00:07 -0800
MIME-Version: 1.0
Content-Type: text/plain; charset=ISO-8859-1

Delivery to the following recipient failed permanently:

     {address}

Technical details of permanent failure:
Google tried to deliver your message, but it was rejected by the recipient domain. The error that the other
server returned was: 550 550 5.2.1 <{address}>: user account disabled (state 14).

----- Original message -----

{returned_headers(message, address)}
Hello friend, here is our periodic update.
""")


def postfix_plain(message, address: str) -> bytes:
    """A Postfix notice relayed without its report part (multipart/mixed, text and headers)."""
    return _crlf(f"""
From: MAILER-DAEMON@relay.example.net (Mail Delivery System)
To: bounces@{DOMAIN}
Subject: Undelivered Mail Returned to Sender
Message-Id: <20261202100100.AB12@relay.example.net>
Date: Tue,  2 Dec 2026 10:01:00 +0000 (UTC)
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="AB12.1733133660/relay.example.net"

--AB12.1733133660/relay.example.net
Content-Description: Notification
Content-Type: text/plain

This is the Postfix program at host relay.example.net.

I'm sorry to have to inform you that the message returned
below could not be delivered to one or more destinations.

For further assistance, please send mail to <postmaster>

If you do so, please include this problem report. You can
delete your own text from the message returned below.

			The Postfix program

<{address}>: host mx.example.net[192.0.2.30] said: 550 5.1.1 No such user
    (in reply to RCPT TO command)

--AB12.1733133660/relay.example.net
Content-Description: Undelivered Message
Content-Type: message/rfc822

{returned_headers(message, address)}
Hello friend.

--AB12.1733133660/relay.example.net--
""")


def qmail(message, address: str) -> bytes:
    """qmail's notice: no MIME structure at all."""
    return _crlf(f"""
From: MAILER-DAEMON@mail.example.org
To: bounces@{DOMAIN}
Subject: failure notice
Message-ID: <qmail-{message.id}@mail.example.org>
Date: 2 Dec 2026 10:02:00 -0000

Hi. This is the qmail-send program at mail.example.org.
I'm afraid I wasn't able to deliver your message to the following addresses.
This is a permanent error; I've given up. Sorry it didn't work out.

<{address}>:
Sorry, no mailbox here by that name. (#5.1.1)

--- Below this line is a copy of the message.

{returned_headers(message, address)}
Hello friend.
""")


def arf(message, address: str | None, *, redacted: bool = False, feedback_type: str = "abuse",
        n: int = 1) -> bytes:
    """An ARF report (RFC 5965) as a feedback loop sends it; `redacted` hides the recipient and
    returns only the headers."""
    rcpt = f"Original-Rcpt-To: {address}\n" if address and not redacted else ""
    headers = returned_headers(message, "redacted@example.com" if redacted else address)
    third = ("Content-Type: text/rfc822-headers\n\n" + headers) if redacted else (
        "Content-Type: message/rfc822\nContent-Disposition: inline\n\n" + headers
        + 'Content-Type: text/plain; charset="utf-8"\n\nHello friend.\n')
    return _crlf(f"""
From: <feedback@fbl.example.com>
Date: Thu, 8 Mar 2026 14:00:00 EDT
Subject: FW: Our periodic update
To: <abuse@{DOMAIN}>
Message-ID: <arf-{message.id}-{n}@fbl.example.com>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=feedback-report;
     boundary="part1_13d.2e68ed54_boundary"

--part1_13d.2e68ed54_boundary
Content-Type: text/plain; charset="US-ASCII"
Content-Transfer-Encoding: 7bit

This is an email abuse report for an email message received from IP
192.0.2.1 on Thu, 8 Mar 2026 14:00:00 EDT.
For more information about this format please see
http://www.mipassoc.org/arf/.

--part1_13d.2e68ed54_boundary
Content-Type: message/feedback-report

Feedback-Type: {feedback_type}
User-Agent: SomeGenerator/1.0
Version: 1
Original-Mail-From: <bounces@{DOMAIN}>
{rcpt}Arrival-Date: Thu, 8 Mar 2026 14:00:00 EDT
Reporting-MTA: dns; mail.fbl.example.com
Source-IP: 192.0.2.1
Authentication-Results: mail.fbl.example.com; spf=pass smtp.mail=bounces@{DOMAIN}
Reported-Domain: {DOMAIN}

--part1_13d.2e68ed54_boundary
{third}
--part1_13d.2e68ed54_boundary--
""")


def verp_only(message, address: str) -> bytes:
    """A terse DSN that quotes nothing: only the VERP return path says which message it was."""
    return _crlf(f"""
Return-Path: <>
Delivered-To: bounces+{message.campaign_id}.{message.id}@{DOMAIN}
To: bounces+{message.campaign_id}.{message.id}@{DOMAIN}
From: MAILER-DAEMON@mx.example.net
Subject: Mail delivery failed
Message-ID: <verp-{message.id}@mx.example.net>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="b"

--b
Content-Type: text/plain

Delivery failed.

--b
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.net

Final-Recipient: rfc822; {address}
Action: failed
Status: 5.1.1

--b--
""")


def out_of_office(address: str) -> bytes:
    return _crlf(f"""
From: {address}
To: bounces@{DOMAIN}
Subject: Automatic reply: Our periodic update
Auto-Submitted: auto-replied
Message-ID: <ooo-1@example.net>
Date: Tue, 2 Dec 2026 10:05:00 +0000
Content-Type: text/plain; charset=utf-8

I am away until Monday with no access to email.
""")
