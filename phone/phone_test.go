package phone

import "testing"

func TestParse(t *testing.T) {
	valid := []struct {
		in, digits string
		cc         int
	}{
		{"+91 98123 45678", "919812345678", 91},
		{"919812345678", "919812345678", 91},
		{"0091-98123-45678", "919812345678", 91},
		{"+1 (650) 253-0000", "16502530000", 1},
		{"+44 20 7946 0958", "442079460958", 44},
		{" +49 30 901820 ", "4930901820", 49},
	}
	for _, tc := range valid {
		t.Run(tc.in, func(t *testing.T) {
			n, err := Parse(tc.in)
			if err != nil {
				t.Fatalf("Parse(%q): %v", tc.in, err)
			}
			if n.Digits != tc.digits || n.CC != tc.cc {
				t.Errorf("Parse(%q) = %+v, want %s cc %d", tc.in, n, tc.digits, tc.cc)
			}
		})
	}
	for _, in := range []string{"", "abc", "12345", "+91 12", "99999999999", "+1 000 000 0000", "1234567890123456789", "1) OR 1=1 --"} {
		if n, err := Parse(in); err == nil {
			t.Errorf("Parse(%q) = %+v, want ErrInvalid", in, n)
		}
	}
}

func TestLenientKeepsFictionalNumbers(t *testing.T) {
	n, err := Lenient("+1 555 0100 999")
	if err != nil || n.Digits != "15550100999" || n.CC != 1 {
		t.Fatalf("Lenient = %+v, %v", n, err)
	}
	if _, err := Lenient("12"); err == nil {
		t.Fatal("Lenient accepted a two-digit number")
	}
}

func TestParseContact(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		cc   int
		want string
	}{
		{"international wins over the uploader's country", "+44 20 7946 0958", 91, "442079460958"},
		{"00 prefix", "0044 20 7946 0958", 91, "442079460958"},
		{"national, no trunk prefix", "98123 45678", 91, "919812345678"},
		{"national with trunk 0", "098123 45678", 91, "919812345678"},
		{"the apps' international digits", "919812345678", 1, "919812345678"},
		{"US national", "(650) 253-0000", 1, "16502530000"},
		{"UK national with trunk 0", "020 7946 0958", 44, "442079460958"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n, err := ParseContact(tc.in, tc.cc)
			if err != nil || n.Digits != tc.want {
				t.Errorf("ParseContact(%q, %d) = %+v, %v; want %s", tc.in, tc.cc, n, err, tc.want)
			}
		})
	}
	for _, in := range []string{"", "12", "1) OR 1=1 --", "000", "+1 000 000 0000"} {
		if n, err := ParseContact(in, 91); err == nil {
			t.Errorf("ParseContact(%q) = %+v, want error", in, n)
		}
	}
	if _, err := ParseContact("98123 45678", 0); err == nil {
		t.Error("a national number without the uploader's country was accepted")
	}
}

func TestIsDigits(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want bool
	}{
		{"919812345678", true},
		{"15550100999", true}, // fictional, as review numbers are
		{"1234567", true},
		{"123456789012345", true},
		{"123456", false},
		{"1234567890123456", false},
		{"0919812345678", false},
		{"+919812345678", false},
		{"91 9812345678", false},
		{"1) OR 1=1 --", false},
		{"９１９８１２３４５６７８", false}, // full-width digits
		{"", false},
	} {
		t.Run(tc.in, func(t *testing.T) {
			if got := IsDigits(tc.in); got != tc.want {
				t.Errorf("IsDigits(%q) = %v, want %v", tc.in, got, tc.want)
			}
		})
	}
}
