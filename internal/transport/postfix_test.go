package transport

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// postfixConfDir is fixed: postfix -c accepts only a directory listed in
// alternate_config_directories of the default main.cf.
const postfixConfDir = "/tmp/mailrelay-postfix-test/etc"

// startPostfix runs Debian's Postfix as a local instance on 127.0.0.1 and a
// free port, delivering every mail for example.com into a Maildir, and
// returns the port and the Maildir's new/ directory. It skips the test when
// Postfix is not installed or the test is not root (Postfix's master must
// start as root); as root it adds postfixConfDir to
// alternate_config_directories once (apt-get install -y postfix first).
func startPostfix(t *testing.T) (int, string) {
	t.Helper()
	if _, err := exec.LookPath("postfix"); err != nil {
		t.Skip("postfix is not installed (apt-get install -y postfix)")
	}
	if os.Geteuid() != 0 {
		t.Skip("a Postfix instance must be started as root")
	}
	out, _ := exec.Command("postconf", "-h", "alternate_config_directories").Output()
	if !strings.Contains(string(out), postfixConfDir) {
		if err := exec.Command("postconf", "-e", "alternate_config_directories = "+strings.TrimSpace(string(out))+" "+postfixConfDir).Run(); err != nil {
			t.Skipf("cannot register the test's Postfix config directory: %v", err)
		}
	}
	root := filepath.Dir(postfixConfDir)
	_ = os.RemoveAll(root)
	for _, d := range []string{"etc", "queue", "data", "mail"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	_ = os.Chown(filepath.Join(root, "mail"), 65534, 65534)
	if out, err := exec.Command("chown", "postfix", filepath.Join(root, "data")).CombinedOutput(); err != nil {
		t.Skipf("chown postfix: %v %s", err, out)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	_ = ln.Close()
	mainCf := fmt.Sprintf(`compatibility_level = 3.6
queue_directory = %[1]s/queue
data_directory = %[1]s/data
mail_owner = postfix
setgid_group = postdrop
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = postfix.test
mydestination =
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = reject_unauth_destination
virtual_mailbox_domains = example.com
virtual_mailbox_base = %[1]s/mail
virtual_mailbox_maps = static:inbox/
virtual_uid_maps = static:65534
virtual_gid_maps = static:65534
maillog_file = /dev/stdout
smtputf8_enable = yes
`, root)
	if err := os.WriteFile(filepath.Join(postfixConfDir, "main.cf"), []byte(mainCf), 0o644); err != nil {
		t.Fatal(err)
	}
	master, err := os.ReadFile("/etc/postfix/master.cf")
	if err != nil {
		t.Skipf("no /etc/postfix/master.cf to start from: %v", err)
	}
	var mc []string
	for _, l := range strings.Split(string(master), "\n") {
		if strings.HasPrefix(l, "smtp ") && strings.Contains(l, " inet ") {
			l = fmt.Sprintf("127.0.0.1:%d inet n - n - - smtpd", port)
		}
		mc = append(mc, l)
	}
	if err := os.WriteFile(filepath.Join(postfixConfDir, "master.cf"), []byte(strings.Join(mc, "\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("postfix", "-c", postfixConfDir, "start-fg")
	logPath := filepath.Join(root, "postfix.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Skipf("postfix start-fg: %v", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = exec.Command("postfix", "-c", postfixConfDir, "stop").Run()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err == nil {
			_ = c.Close()
			break
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(logPath)
			t.Fatalf("postfix did not listen on %d: %s", port, log)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return port, filepath.Join(root, "mail", "inbox", "new")
}

// TestPostfix sends through a real Postfix (it offers PIPELINING and
// CHUNKING) pipelined with BDAT, then lockstep with pipelining off, and
// finds each message delivered whole; a recipient Postfix refuses is a
// permanent failure at RCPT.
func TestPostfix(t *testing.T) {
	port, maildir := startPostfix(t)
	want, err := renderBytes(testMessage())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []Pipelining{PipeliningAuto, PipeliningOff} {
		s := newSMTP(t, SMTPConfig{Host: "127.0.0.1", Port: port, Timeout: wait, HeloName: "client.test", Pipelining: p}, nil)
		for range 3 {
			send(t, s)
		}
	}
	deadline := time.Now().Add(15 * time.Second)
	var files []os.DirEntry
	for {
		files, _ = os.ReadDir(maildir)
		if len(files) >= 6 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if len(files) != 6 {
		t.Fatalf("Postfix delivered %d messages, want 6", len(files))
	}
	for _, f := range files {
		got, err := os.ReadFile(filepath.Join(maildir, f.Name()))
		if err != nil {
			t.Fatal(err)
		}
		// Postfix adds Return-Path, Delivered-To and Received above the
		// message and stores it with LF line ends.
		if !bytes.HasSuffix(got, bytes.ReplaceAll(want, []byte("\r\n"), []byte("\n"))) {
			t.Errorf("delivered message does not end with the rendered one:\n%s", got)
		}
	}

	s := newSMTP(t, SMTPConfig{Host: "127.0.0.1", Port: port, Timeout: wait, HeloName: "client.test"}, nil)
	m := testMessage()
	m.To.Email = "ann@elsewhere.example" // not a domain of this Postfix: relay refused
	e := asError(t, s.Send(context.Background(), m))
	if e.Temporary || e.Step != StepRcpt || e.Code != 554 || e.Enhanced != "5.7.1" {
		t.Errorf("refused recipient: %+v, want permanent 554 5.7.1 at rcpt", e)
	}
}
