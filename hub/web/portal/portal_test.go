package portal

import (
	"net/url"
	"testing"

	"github.com/frank-postage/frank/protocol"
)

func TestParseOrder(t *testing.T) {
	good := url.Values{"class": {"1100"}, "weight_oz": {"1"}, "sheet": {" 1966-f8cf "}, "count": {"3"}}
	o, err := parseOrder(good)
	if err != nil || o.WeightMg != 28349 || o.Sheet.String() != "1966-F8CF" || o.Count != 3 || o.RateClass != "1100" {
		t.Fatalf("%+v %v", o, err)
	}
	for name, edit := range map[string]func(url.Values){
		"no weight":   func(v url.Values) { v.Del("weight_oz") },
		"zero weight": func(v url.Values) { v.Set("weight_oz", "0") },
		"NaN":         func(v url.Values) { v.Set("weight_oz", "NaN") },
		"huge":        func(v url.Values) { v.Set("weight_oz", "1e300") },
		"bad sheet":   func(v url.Values) { v.Set("sheet", "1966-F8CF-01") },
		"no count":    func(v url.Values) { v.Del("count") },
		"11 stamps":   func(v url.Values) { v.Set("count", "11") },
		"no class":    func(v url.Values) { v.Del("class") },
	} {
		v := url.Values{}
		for k, vs := range good {
			v[k] = vs
		}
		edit(v)
		if _, err := parseOrder(v); err == nil {
			t.Errorf("%s: accepted", name)
		} else if pe, ok := err.(*protocol.Error); !ok || pe.Code == "" {
			t.Errorf("%s: untyped error %v", name, err)
		}
	}
}

func FuzzParseOrder(f *testing.F) {
	f.Add("1100", "1", "1966-F8CF", "3")
	f.Add("", "-1", "zzzz", "x")
	f.Add("1100", "3.5", "0000-0000", "10")
	f.Fuzz(func(t *testing.T, class, weight, sheet, count string) {
		o, err := parseOrder(url.Values{"class": {class}, "weight_oz": {weight}, "sheet": {sheet}, "count": {count}})
		if err != nil {
			if _, ok := err.(*protocol.Error); !ok {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		if o.WeightMg <= 0 || o.Count < 1 || o.Count > protocol.LabelsPerSheet || o.RateClass == "" {
			t.Fatalf("accepted a bad order %+v", o)
		}
	})
}
