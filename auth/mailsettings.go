package auth

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	htmltemplate "html/template"
	"io"
	"net/mail"
	"strconv"
	"strings"
	texttemplate "text/template"
)

// The tenant settings of its mails, by Supabase's Management API names:
// the lifetime of links and codes, secure email change, reauthentication
// before a password change, the tenant's own SMTP server and sender, the
// limits, and a template per kind of mail.

// MailKind is a kind of mail, by the name Supabase's template settings
// use (mailer_subjects_<kind>, mailer_templates_<kind>_content).
type MailKind int

// Mail kinds.
const (
	MailConfirmation MailKind = iota
	MailRecovery
	MailMagicLink
	MailInvite
	MailEmailChange
	MailReauthentication
	numMailKinds
)

var mailKindNames = [numMailKinds]string{"confirmation", "recovery", "magic_link", "invite", "email_change", "reauthentication"}

func (k MailKind) String() string { return mailKindNames[k] }

// MailTemplate is a tenant's template of one kind of mail: its subject
// (text/template), HTML body (html/template) and text body
// (text/template); "" takes the default.
type MailTemplate struct {
	Subject, HTML, Text string
}

// MailData are the variables of a mail template, by GoTrue's names.
type MailData struct {
	ConfirmationURL string
	Token           string // the 6-digit code
	TokenHash       string // what the link carries; verifyOtp({token_hash})
	SiteURL         string
	Email           string
	NewEmail        string
	RedirectTo      string
	Data            map[string]any // the user's metadata
}

// sampleMailData checks a template when it is saved.
var sampleMailData = MailData{ConfirmationURL: "https://auth.example.com/t/acme/verify?token=abc&type=signup",
	Token: "123456", TokenHash: "abc", SiteURL: "https://example.com", Email: "ann@example.com",
	NewEmail: "ann.new@example.com", RedirectTo: "https://example.com/welcome", Data: map[string]any{"name": "Ann"}}

// Default templates: both the link and the 6-digit code, so that a user
// reading the mail on another device can type the code.
var defaultMailTemplates = [numMailKinds]MailTemplate{
	MailConfirmation: {Subject: "Confirm your email address",
		HTML: `<h2>Confirm your email address</h2>
<p>Follow the link below to confirm this email address and finish signing up.</p>
<p><a href="{{ .ConfirmationURL }}">Confirm email address</a></p>
<p>Or enter this code: <strong>{{ .Token }}</strong></p>
`,
		Text: "Confirm your email address\n\nFollow this link to confirm this email address and finish signing up:\n{{ .ConfirmationURL }}\n\nOr enter this code: {{ .Token }}\n"},
	MailRecovery: {Subject: "Reset your password",
		HTML: `<h2>Reset your password</h2>
<p>We received a request to reset your password. Follow the link below to choose a new one.</p>
<p><a href="{{ .ConfirmationURL }}">Reset password</a></p>
<p>Or enter this code: <strong>{{ .Token }}</strong></p>
<p>If you didn't request this, you can safely ignore this email.</p>
`,
		Text: "Reset your password\n\nWe received a request to reset your password. Follow this link to choose a new one:\n{{ .ConfirmationURL }}\n\nOr enter this code: {{ .Token }}\n\nIf you didn't request this, you can safely ignore this email.\n"},
	MailMagicLink: {Subject: "Your sign-in link",
		HTML: `<h2>Your sign-in link</h2>
<p>Follow the link below to sign in. This link expires shortly and can only be used once.</p>
<p><a href="{{ .ConfirmationURL }}">Sign in</a></p>
<p>Or enter this code: <strong>{{ .Token }}</strong></p>
`,
		Text: "Your sign-in link\n\nFollow this link to sign in. It expires shortly and can only be used once:\n{{ .ConfirmationURL }}\n\nOr enter this code: {{ .Token }}\n"},
	MailInvite: {Subject: "You've been invited",
		HTML: `<h2>You've been invited</h2>
<p>You've been invited to create an account. Follow the link below to accept.</p>
<p><a href="{{ .ConfirmationURL }}">Accept invitation</a></p>
<p>Or enter this code: <strong>{{ .Token }}</strong></p>
`,
		Text: "You've been invited\n\nYou've been invited to create an account. Follow this link to accept:\n{{ .ConfirmationURL }}\n\nOr enter this code: {{ .Token }}\n"},
	MailEmailChange: {Subject: "Confirm your new email address",
		HTML: `<h2>Confirm the change of your email address</h2>
<p>Follow the link below to confirm the change of your email address from {{ .Email }} to {{ .NewEmail }}.</p>
<p><a href="{{ .ConfirmationURL }}">Confirm email change</a></p>
<p>Or enter this code: <strong>{{ .Token }}</strong></p>
`,
		Text: "Confirm the change of your email address\n\nFollow this link to confirm the change of your email address from {{ .Email }} to {{ .NewEmail }}:\n{{ .ConfirmationURL }}\n\nOr enter this code: {{ .Token }}\n"},
	MailReauthentication: {Subject: "{{ .Token }} is your verification code",
		HTML: `<h2>Your verification code</h2>
<p>Use the code below to verify your identity. It expires shortly.</p>
<p><strong>{{ .Token }}</strong></p>
`,
		Text: "Your verification code\n\nUse this code to verify your identity. It expires shortly:\n{{ .Token }}\n"},
}

// renderedMail is a mail ready for the outbox: the data of its row, which
// the mail sink sends (the shape of mail.Message).
type renderedMail struct {
	To      string `json:"to"`
	Subject string `json:"subject"`
	Text    string `json:"text"`
	HTML    string `json:"html,omitempty"`
	From    string `json:"from,omitempty"`
	// Token is the stored hash of the one-time token the mail carries:
	// the sink drops a mail whose token was replaced, used or has expired
	// by the time it would be sent (the outbox sends in parallel, so a
	// newer mail may otherwise arrive before an older, dead one).
	Token string `json:"token,omitempty"`
}

// render fills the tenant's template of kind k (or the default) with d.
func (st *Settings) render(k MailKind, to string, d MailData) (renderedMail, error) {
	t := st.MailTemplates[k]
	def := defaultMailTemplates[k]
	if t.Subject == "" {
		t.Subject = def.Subject
	}
	if t.HTML == "" && t.Text == "" {
		t.HTML, t.Text = def.HTML, def.Text
	}
	m := renderedMail{To: to, From: st.mailFrom()}
	var err error
	if m.Subject, err = execText(t.Subject, d); err != nil {
		return m, fmt.Errorf("subject: %w", err)
	}
	m.Subject = strings.Join(strings.Fields(m.Subject), " ") // one line
	if t.HTML != "" {
		if m.HTML, err = execHTML(t.HTML, d); err != nil {
			return m, fmt.Errorf("html: %w", err)
		}
	}
	if t.Text != "" {
		if m.Text, err = execText(t.Text, d); err != nil {
			return m, fmt.Errorf("text: %w", err)
		}
	} else {
		m.Text = "Open this mail in a client that shows HTML, or use this link:\n" + d.ConfirmationURL + "\n"
		if d.Token != "" {
			m.Text += "\nCode: " + d.Token + "\n"
		}
	}
	return m, nil
}

// maxTemplate bounds a template's size, and what it renders to.
const maxTemplate = 64 << 10

// execText and execHTML run a template on d. A field MailData lacks fails
// (checked when a template is saved); a metadata key (.Data.x) the user
// lacks renders as Go's default, not an error: metadata differ from user
// to user, and a failing render would fail the request that mails.
func execText(src string, d MailData) (string, error) {
	t, err := texttemplate.New("").Parse(src)
	if err != nil {
		return "", err
	}
	var b bytes.Buffer
	err = t.Execute(&limitWriter{w: &b, n: 4 * maxTemplate}, d)
	return b.String(), err
}

func execHTML(src string, d MailData) (string, error) {
	t, err := htmltemplate.New("").Parse(src)
	if err != nil {
		return "", err
	}
	var b bytes.Buffer
	err = t.Execute(&limitWriter{w: &b, n: 4 * maxTemplate}, d)
	return b.String(), err
}

// limitWriter fails a template that renders too much (a range over a
// large metadata value).
type limitWriter struct {
	w io.Writer
	n int
}

func (l *limitWriter) Write(p []byte) (int, error) {
	if len(p) > l.n {
		return 0, fmt.Errorf("the template renders more than %d bytes", 4*maxTemplate)
	}
	l.n -= len(p)
	return l.w.Write(p)
}

// mailFrom is the tenant's sender, "" for the server's.
func (st *Settings) mailFrom() string {
	if st.SMTPAdminEmail == "" {
		return ""
	}
	if st.SMTPSenderName == "" {
		return st.SMTPAdminEmail
	}
	return (&mail.Address{Name: st.SMTPSenderName, Address: st.SMTPAdminEmail}).String()
}

// secretMask stands for a stored secret setting in what GET shows; a PATCH
// that sends it back leaves the secret as it is.
const secretMask = "********"

func init() {
	settingFields = append(settingFields, mailSettingFields()...)
}

func mailSettingFields() []setting {
	fields := []setting{
		intSetting("mailer_otp_exp", func(st *Settings) *int { return &st.MailerOTPExp }, 60, 86400),
		boolSetting("mailer_secure_email_change_enabled", func(st *Settings) *bool { return &st.SecureEmailChange }),
		boolSetting("security_update_password_require_reauthentication", func(st *Settings) *bool { return &st.PasswordRequiresReauth }),
		boolSetting("external_email_linking_enabled", func(st *Settings) *bool { return &st.EmailLinking }),
		boolSetting("security_manual_linking_enabled", func(st *Settings) *bool { return &st.ManualLinking }),
		intSetting("smtp_max_frequency", func(st *Settings) *int { return &st.SMTPMaxFrequency }, 0, 86400),
		intSetting("rate_limit_email_sent", func(st *Settings) *int { return &st.RateLimitEmailSent }, 0, 1_000_000),
		{"smtp_host", func(st *Settings) any { return st.SMTPHost },
			func(_ *Service, st *Settings, raw json.RawMessage) error {
				if err := decodeSetting(raw, &st.SMTPHost); err != nil {
					return err
				}
				if len(st.SMTPHost) > 253 || strings.ContainsAny(st.SMTPHost, " /:@?#\t\r\n") {
					return fmt.Errorf("must be a host name or an IP address")
				}
				return nil
			}},
		{"smtp_port", func(st *Settings) any { return portString(st.SMTPPort) },
			func(_ *Service, st *Settings, raw json.RawMessage) error {
				// Supabase sends the port as a string; a number is taken too.
				var s string
				if json.Unmarshal(raw, &s) != nil {
					if err := decodeSetting(raw, &st.SMTPPort); err != nil {
						return fmt.Errorf("has the wrong type: want a port number")
					}
				} else if s == "" {
					st.SMTPPort = 0
				} else if p, err := strconv.Atoi(s); err != nil {
					return fmt.Errorf("must be a port number")
				} else {
					st.SMTPPort = p
				}
				if st.SMTPPort < 0 || st.SMTPPort > 65535 {
					return fmt.Errorf("must be a port number")
				}
				return nil
			}},
		stringSetting("smtp_user", func(st *Settings) *string { return &st.SMTPUser }, 320),
		{"smtp_pass", func(st *Settings) any {
			if st.SMTPPass == "" {
				return ""
			}
			return secretMask
		},
			func(_ *Service, st *Settings, raw json.RawMessage) error {
				return decodeSetting(raw, &st.SMTPPass)
			}},
		{"smtp_admin_email", func(st *Settings) any { return st.SMTPAdminEmail },
			func(_ *Service, st *Settings, raw json.RawMessage) error {
				if err := decodeSetting(raw, &st.SMTPAdminEmail); err != nil {
					return err
				}
				if st.SMTPAdminEmail != "" {
					if a, err := mail.ParseAddress(st.SMTPAdminEmail); err != nil || a.Name != "" {
						return fmt.Errorf("must be an email address")
					}
				}
				return nil
			}},
		stringSetting("smtp_sender_name", func(st *Settings) *string { return &st.SMTPSenderName }, 100),
	}
	for k := range numMailKinds {
		k := k
		name := mailKindNames[k]
		fields = append(fields,
			templateSetting("mailer_subjects_"+name, k, func(t *MailTemplate) *string { return &t.Subject }, execText),
			templateSetting("mailer_templates_"+name+"_content", k, func(t *MailTemplate) *string { return &t.HTML }, execHTML),
			templateSetting("mailer_templates_"+name+"_text", k, func(t *MailTemplate) *string { return &t.Text }, execText))
	}
	return fields
}

func portString(p int) string {
	if p == 0 {
		return ""
	}
	return strconv.Itoa(p)
}

func intSetting(name string, field func(*Settings) *int, lo, hi int) setting {
	return setting{name, func(st *Settings) any { return *field(st) },
		func(_ *Service, st *Settings, raw json.RawMessage) error {
			if err := decodeSetting(raw, field(st)); err != nil {
				return err
			}
			if v := *field(st); v < lo || v > hi {
				return fmt.Errorf("must be from %d to %d", lo, hi)
			}
			return nil
		}}
}

func boolSetting(name string, field func(*Settings) *bool) setting {
	return setting{name, func(st *Settings) any { return *field(st) },
		func(_ *Service, st *Settings, raw json.RawMessage) error { return decodeSetting(raw, field(st)) }}
}

func stringSetting(name string, field func(*Settings) *string, max int) setting {
	return setting{name, func(st *Settings) any { return *field(st) },
		func(_ *Service, st *Settings, raw json.RawMessage) error {
			if err := decodeSetting(raw, field(st)); err != nil {
				return err
			}
			if len(*field(st)) > max || strings.ContainsAny(*field(st), "\r\n") {
				return fmt.Errorf("must be one line of at most %d bytes", max)
			}
			return nil
		}}
}

// templateSetting is one part of a mail template: refused when it does
// not parse or does not run on sample data (an unknown variable).
func templateSetting(name string, k MailKind, part func(*MailTemplate) *string, exec func(string, MailData) (string, error)) setting {
	return setting{name, func(st *Settings) any { return *part(&st.MailTemplates[k]) },
		func(svc *Service, st *Settings, raw json.RawMessage) error {
			p := part(&st.MailTemplates[k])
			if err := decodeSetting(raw, p); err != nil {
				return err
			}
			if svc == nil || *p == "" { // reading what was stored: checked when it was
				return nil
			}
			if len(*p) > maxTemplate {
				return fmt.Errorf("must be at most %d bytes", maxTemplate)
			}
			if _, err := exec(*p, sampleMailData); err != nil {
				return fmt.Errorf("is not a valid template: %v", err)
			}
			return nil
		}}
}

// sealedPrefix marks a secret setting sealed under the master key.
const sealedPrefix = "sealed:"

// sealSMTPPass seals a tenant's SMTP password for the settings table.
func (s *Service) sealSMTPPass(t Tenant, pass string) string {
	if pass == "" {
		return ""
	}
	return sealedPrefix + base64.StdEncoding.EncodeToString(s.keys.SealSecret(t.ID, "smtp_pass", []byte(pass)))
}

// SMTPPassword returns the tenant's SMTP password in clear, for the mail
// sink.
func (s *Service) SMTPPassword(t Tenant, st Settings) (string, error) {
	sealed, ok := strings.CutPrefix(st.SMTPPass, sealedPrefix)
	if !ok {
		return st.SMTPPass, nil
	}
	raw, err := base64.StdEncoding.DecodeString(sealed)
	if err != nil {
		return "", fmt.Errorf("smtp_pass: %w", err)
	}
	plain, err := s.keys.OpenSecret(t.ID, "smtp_pass", raw)
	return string(plain), err
}
