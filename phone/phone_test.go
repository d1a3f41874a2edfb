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
		n, err := Parse(tc.in)
		if err != nil {
			t.Errorf("Parse(%q): %v", tc.in, err)
			continue
		}
		if n.Digits != tc.digits || n.CC != tc.cc {
			t.Errorf("Parse(%q) = %+v, want %s cc %d", tc.in, n, tc.digits, tc.cc)
		}
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
	if got := (Number{Digits: "919812345678"}).Int(); got != 919812345678 {
		t.Fatalf("Int = %d", got)
	}
}
