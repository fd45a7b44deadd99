package oidc

// layoutHTML holds the hosted pages: server-rendered, working without
// JavaScript, one form each, labelled fields, errors tied to their field
// (aria-describedby, aria-invalid), focus on the first thing to do.
const layoutHTML = `
{{define "head"}}<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>{{.Title}} · {{.Brand.Name}}</title>
<style nonce="{{.Nonce}}">
:root { --primary: {{.Brand.Color}}; --on-primary: {{.Brand.OnColor}}; }
* { box-sizing: border-box; }
body { margin: 0; font: 16px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #111827; background: #f3f4f6; }
main { max-width: 26rem; margin: 3rem auto; padding: 2rem; background: #fff; border-radius: .75rem; box-shadow: 0 1px 3px rgba(0,0,0,.12); }
header { text-align: center; margin-bottom: 1.5rem; }
header img { max-height: 3rem; max-width: 12rem; }
.brand { font-weight: 600; color: #374151; }
h1 { font-size: 1.375rem; margin: .5rem 0 1rem; }
label { display: block; font-weight: 600; margin: 1rem 0 .25rem; }
input[type=email], input[type=password], input[type=text] { width: 100%; padding: .625rem .75rem; font-size: 1rem; border: 1px solid #6b7280; border-radius: .375rem; color: #111827; background: #fff; }
input:focus, button:focus { outline: 3px solid var(--primary); outline-offset: 2px; }
input[aria-invalid=true] { border-color: #b91c1c; }
.error { color: #b91c1c; margin: .5rem 0 0; }
.alert { color: #7f1d1d; background: #fee2e2; border: 1px solid #b91c1c; border-radius: .375rem; padding: .75rem; }
.actions { display: flex; gap: .75rem; margin-top: 1.5rem; }
button { flex: 1; padding: .7rem 1rem; font-size: 1rem; font-weight: 600; border-radius: .375rem; cursor: pointer; border: 2px solid var(--primary); }
button.primary { background: var(--primary); color: var(--on-primary); }
button.secondary { background: #fff; color: #111827; border-color: #6b7280; }
ul.scopes { padding-left: 1.25rem; }
.who { color: #374151; font-size: .9375rem; }
.code { font: 600 1.25rem/1.2 ui-monospace, monospace; letter-spacing: .1em; }
</style>
</head>
<body>
<main>
<header>{{if .Brand.Logo}}<img src="{{.Brand.Logo}}" alt="{{.Brand.Name}}">{{else}}<div class="brand">{{.Brand.Name}}</div>{{end}}</header>
{{end}}

{{define "foot"}}</main>
</body>
</html>{{end}}

{{define "hidden"}}<input type="hidden" name="csrf" value="{{.CSRF}}">{{range $k, $v := .Hidden}}<input type="hidden" name="{{$k}}" value="{{$v}}">{{end}}{{end}}

{{define "login"}}{{template "head" .}}
<h1>{{.Title}}</h1>
{{if .Error}}<p class="alert" role="alert" id="form-error">{{.Error}}</p>{{end}}
<form method="post" action="{{.Action}}" novalidate>
{{template "hidden" .}}
<label for="email">Email</label>
<input id="email" name="email" type="email" autocomplete="username" required autofocus value="{{.Email}}"{{if .Error}} aria-invalid="true" aria-describedby="form-error"{{end}}>
<label for="password">Password</label>
<input id="password" name="password" type="password" autocomplete="current-password" required{{if .Error}} aria-describedby="form-error"{{end}}>
<div class="actions"><button class="primary" type="submit">Sign in</button></div>
</form>
{{template "foot" .}}{{end}}

{{define "consent"}}{{template "head" .}}
<h1>{{.Title}}</h1>
<p><strong>{{.Client}}</strong> asks to:</p>
<ul class="scopes">{{range .Scopes}}<li>{{scope .}}</li>{{end}}</ul>
<p class="who">Signed in as {{.UserEmail}}</p>
<form method="post" action="{{.Action}}">
{{template "hidden" .}}
<div class="actions">
<button class="primary" type="submit" name="decision" value="allow" autofocus>Allow</button>
<button class="secondary" type="submit" name="decision" value="deny">Deny</button>
</div>
</form>
{{template "foot" .}}{{end}}

{{define "device"}}{{template "head" .}}
<h1>{{.Title}}</h1>
<p>Enter the code shown on your device.</p>
<form method="post" action="{{.Action}}" novalidate>
{{template "hidden" .}}
<label for="user_code">Code</label>
<input id="user_code" name="user_code" type="text" class="code" autocomplete="one-time-code" autocapitalize="characters" spellcheck="false" placeholder="XXXX-XXXX" required autofocus value="{{.UserCode}}"{{if .FieldErr}} aria-invalid="true" aria-describedby="user_code-error"{{end}}>
{{if .FieldErr}}<p class="error" id="user_code-error" role="alert">{{.FieldErr}}</p>{{end}}
<p class="who">Signed in as {{.UserEmail}}</p>
<div class="actions"><button class="primary" type="submit">Continue</button></div>
</form>
{{template "foot" .}}{{end}}

{{define "device_confirm"}}{{template "head" .}}
<h1>{{.Title}}</h1>
<p>The device showing <span class="code">{{.UserCode}}</span> is <strong>{{.Client}}</strong>. It asks to:</p>
<ul class="scopes">{{range .Scopes}}<li>{{scope .}}</li>{{end}}</ul>
<p class="who">Signed in as {{.UserEmail}}</p>
<form method="post" action="{{.Action}}">
{{template "hidden" .}}<input type="hidden" name="user_code" value="{{.UserCode}}">
<div class="actions">
<button class="primary" type="submit" name="decision" value="allow" autofocus>Allow</button>
<button class="secondary" type="submit" name="decision" value="deny">Deny</button>
</div>
</form>
{{template "foot" .}}{{end}}

{{define "logout"}}{{template "head" .}}
<h1>{{.Title}}</h1>
{{if .UserEmail}}<p>You are signed in as {{.UserEmail}}.</p>{{end}}
<p>Sign out of {{.Brand.Name}} on this browser?</p>
<form method="post" action="{{.Action}}">
{{template "hidden" .}}
<div class="actions"><button class="primary" type="submit" autofocus>Sign out</button></div>
</form>
{{template "foot" .}}{{end}}

{{define "done"}}{{template "head" .}}
<h1>{{.Title}}</h1>
<p role="status">{{.Message}}</p>
{{template "foot" .}}{{end}}

{{define "error"}}{{template "head" .}}
<h1>{{.Title}}</h1>
<p class="alert" role="alert">{{.Message}}</p>
{{template "foot" .}}{{end}}
`
